"""Tests of us4.media: one clip at a time, on phantom clips written here and, when
present, on the POCUS sample in ../shared/pocus."""
from __future__ import annotations

import importlib
import io
import copy
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from us4.cli import main
from us4.media import (
    Box, ClipInfo, ClipRef, DecodedFrame, MediaError, SamplingPolicy, decode, decode_clip, detect_scan_region,
    dhash, encode_png, find_clips, is_colour, near_duplicate, pixel_sha256, probe, probe_clip, to_grey,
)
from us4.media.decode import limited_to_full
from us4.phantom import phantom_layout, write_broken_files, write_phantom_clip

# The package re-exports the function `decode`, which hides the submodule's attribute.
decode_mod = importlib.import_module("us4.media.decode")

POCUS = Path(__file__).parents[1] / ".." / "shared" / "pocus"
POCUS_VIDEOS = POCUS / "data" / "pocus_videos"
CONTAINERS = {"mp4": "mp4", "avi": "avi", "mov": "mov", "mpeg": "mpeg", "gif": "gif"}
POCOVID = SamplingPolicy(rate_hz=3, max_frames=30)


def _fps(ext: str) -> float:
    return 10.0 if ext == "gif" else 15.0  # GIF stores delays in 1/100 s


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.area + b.area - inter)


def _overlaps(a: Box, b: Box) -> bool:
    return _iou(a, b) > 0


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """One 30-frame grey sector phantom per container."""
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for ext in CONTAINERS:
        p = d / f"sector.{ext}"
        write_phantom_clip(p, seed=3, n_frames=30, fps=_fps(ext))
        out[ext] = p
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    return write_broken_files(tmp_path_factory.mktemp("broken"))


# --- probe -------------------------------------------------------------------

@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_probe_every_container(clips, ext):
    info = probe(clips[ext])
    assert isinstance(info, ClipInfo)
    assert info.container == CONTAINERS[ext]
    assert info.n_frames == 30
    assert info.fps == pytest.approx(_fps(ext))
    assert (info.width, info.height) == (224, 192)
    assert info.duration == pytest.approx(30 / _fps(ext), rel=0.05)
    assert info.rotation == 0
    assert info.frames_counted == (ext == "mpeg")  # MPEG-PS declares no frame count
    assert info.codec in {"h264", "mpeg4", "mpeg2video", "gif", "mjpeg"}
    d = info.to_dict()
    assert d["n_frames"] == 30 and d["path"] == str(clips[ext])


def test_probe_and_decode_apply_rotation(tmp_path):
    path = tmp_path / "rotated.mp4"
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:16, :16] = 255  # a white block at the stored top-left
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.set_display_rotation(90)
        for _ in range(3):
            for pkt in s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    info = probe(path)
    assert info.rotation == 90
    assert (info.width, info.height) == (64, 96)  # upright size
    decoded = decode(path, [0])[0]
    assert decoded.rotation == 90 and decoded.rgb is None
    frame = decoded.to_rgb()
    assert frame.shape == (96, 64, 3)
    expected = np.rot90(stored)  # counter-clockwise: the block ends at the bottom-left
    assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 8
    assert decoded.grey.shape == (96, 64)
    assert np.abs(decoded.grey.astype(int) - to_grey(expected).astype(int)).mean() < 8
    assert decoded.u.shape == decoded.v.shape == (48, 32)  # chroma turned too


def test_probe_failures_name_path_and_reason(broken, tmp_path):
    expected = {
        "empty": "empty file",
        "not_video": "cannot open: ",
        "truncated": "truncated: container declares 48 frames, only ",
        "audio_only": "not a video (no video stream)",
    }
    for key, path in broken.items():
        with pytest.raises(MediaError) as info:
            probe(path)
        err = info.value
        assert err.path == str(path)
        assert err.reason.startswith(expected[key]), (key, err.reason)
        assert str(err) == f"{path}: {err.reason}"
    missing = tmp_path / "missing.mp4"
    with pytest.raises(MediaError, match="no such file"):
        probe(missing)
    with pytest.raises(MediaError, match="not a file"):
        probe(tmp_path)


def test_media_error_survives_a_process_boundary():
    # a ProcessPoolExecutor sends a worker's exception back through its reduce protocol
    err = copy.deepcopy(MediaError("a/b.mp4", "empty file"))
    assert (err.path, err.reason, str(err)) == ("a/b.mp4", "empty file", "a/b.mp4: empty file")


def test_unknown_codec_is_reported(tmp_path):
    good = tmp_path / "good.avi"
    write_phantom_clip(good, seed=1, n_frames=4)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(good.read_bytes().replace(b"FMP4", b"ZZZZ"))  # an unknown fourcc
    with pytest.raises(MediaError, match="unsupported codec"):
        probe(bad)


# --- one entry point for every input kind: videos ----------------------------

def test_video_through_the_clip_entry_point(clips, tmp_path):
    ref = ClipRef("video", [clips["mp4"]])  # any sequence of paths; kept as strings
    assert ref.files == (str(clips["mp4"]),)
    info = probe_clip(ref)
    assert info == probe(clips["mp4"])  # the same facts as before, plus the kind's defaults
    assert (info.kind, info.timing, info.transfer_syntax, info.photometric, info.bits) == (
        "video", "container", None, None, None)
    assert (info.regions, info.spacing_mm, info.burned_in, info.attributes) == ((), None, None, {})
    frames = decode_clip(ref, [3, 1])
    assert [f.index for f in frames] == [1, 3]
    assert all(np.array_equal(a.grey, b.grey) for a, b in zip(frames, decode(clips["mp4"], [1, 3]), strict=True))
    (tmp_path / "notes.txt").write_text("x")
    write_phantom_clip(tmp_path / "sub" / "b.avi", seed=1, n_frames=4)
    write_phantom_clip(tmp_path / "a.mp4", seed=1, n_frames=4)
    (tmp_path / ".hidden.mp4").write_bytes(b"")
    found, others = find_clips("video", tmp_path)
    assert [(c.rel, c.ref.kind) for c in found] == [("a.mp4", "video"), ("sub/b.avi", "video")]
    assert [(o.rel, o.reason) for o in others] == [("notes.txt", "not a video file (suffix '.txt')")]


@pytest.mark.parametrize("args,error", [
    (("mp3", ["a.mp4"]), "unknown input kind"), (("video", []), "at least one file"),
    (("video", ["a.mp4", "b.mp4"]), "a video clip is one file"), (("dicom", ["a.dcm"], 0), "positive number"),
    (("image_sequence", ["a.png"], float("nan")), "positive number"), (("dicom", ["a.dcm"], True), "positive number"),
])
def test_clip_ref_rejects_bad_arguments(args, error):
    with pytest.raises(ValueError, match=error):
        ClipRef(*args)
    with pytest.raises(TypeError):
        ClipRef("video", "a.mp4")  # one path, not a sequence of them


# --- sampling ----------------------------------------------------------------

def test_sampling_every_n():
    assert SamplingPolicy(every_n=4).indices(10, 30.0) == [0, 4, 8]
    assert SamplingPolicy(every_n=1, max_frames=3).indices(10, 30.0) == [0, 1, 2]
    assert SamplingPolicy(every_n=5).indices(0, 30.0) == []


def test_sampling_pocovid_rule():
    assert POCOVID.indices(400, 30.0) == list(range(0, 300, 10))  # every 10th, capped at 30
    assert POCOVID.indices(95, 30.0) == list(range(0, 95, 10))
    assert SamplingPolicy(rate_hz=3).indices(30, 29.97) == [0, 9, 18, 27]  # int(9.99) == 9
    assert SamplingPolicy(rate_hz=3).indices(6, 10.0) == [0, 3]
    assert SamplingPolicy(rate_hz=30).indices(4, 10.0) == [0, 1, 2, 3]  # step never below 1


def test_sampling_evenly():
    assert SamplingPolicy(evenly=4).indices(10, 25.0) == [0, 3, 6, 9]
    assert SamplingPolicy(evenly=3).indices(100, 25.0) == [0, 50, 99]
    assert SamplingPolicy(evenly=5).indices(3, 25.0) == [0, 1, 2]  # fewer on a short clip
    assert SamplingPolicy(evenly=1).indices(7, 25.0) == [0]
    assert SamplingPolicy(evenly=10, max_frames=2).indices(100, 25.0) == [0, 11]


@pytest.mark.parametrize("kwargs", [
    {}, {"every_n": 2, "rate_hz": 3.0}, {"every_n": 0}, {"every_n": -1}, {"rate_hz": 0.0},
    {"evenly": 2.5}, {"every_n": True}, {"every_n": 2, "max_frames": 0},
])
def test_sampling_rejects_bad_policies(kwargs):
    with pytest.raises(ValueError):
        SamplingPolicy(**kwargs)


def test_sampling_dict_round_trip():
    p = SamplingPolicy(rate_hz=3.0, max_frames=30)
    d = p.to_dict()
    assert d == {"max_frames": 30, "rate_hz": 3.0} and list(d) == sorted(d)
    assert SamplingPolicy.from_dict(d) == p
    with pytest.raises(ValueError, match="unknown sampling key"):
        SamplingPolicy.from_dict({"every": 3})


# --- decode ------------------------------------------------------------------

@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_decode_returns_exactly_the_wanted_frames(clips, ext):
    full = decode(clips[ext], range(30))
    assert [f.index for f in full] == list(range(30))
    part = decode(clips[ext], [7, 2, 7, 29])
    assert [f.index for f in part] == [2, 7, 29]
    for f in part:
        assert isinstance(f, DecodedFrame)
        assert f.grey.shape == (192, 224) and f.grey.dtype == np.uint8
        assert np.array_equal(f.grey, full[f.index].grey)
        if ext == "gif":  # GIF decodes to packed RGB (bgra): RGB kept
            assert f.u is None and f.rgb.shape == (192, 224, 3)
            assert np.array_equal(f.grey, to_grey(f.rgb))
        else:  # planar YUV: the chroma planes as stored, no RGB
            assert f.rgb is None and f.u.shape == f.v.shape == (96, 112) and f.u.dtype == np.uint8
            assert np.array_equal(f.u, full[f.index].u) and np.array_equal(f.v, full[f.index].v)
        assert f.to_rgb().shape == (192, 224, 3)
    pts = [f.pts for f in full]
    assert pts == sorted(pts)
    assert pts[10] - pts[0] == pytest.approx(10 / _fps(ext), abs=1e-3)


def test_decode_stops_after_last_wanted_index(clips, monkeypatch):
    seen = []
    original = decode_mod._iter_frames

    def counting(container, stream, tally):
        for frame in original(container, stream, tally):
            seen.append(frame)
            yield frame

    monkeypatch.setattr(decode_mod, "_iter_frames", counting)
    assert [f.index for f in decode(clips["mp4"], [0, 1])] == [0, 1]
    assert len(seen) == 2
    seen.clear()
    assert [f.index for f in decode(clips["mpeg"], [3, 9])] == [3, 9]
    assert len(seen) == 10
    seen.clear()
    assert decode(clips["mp4"], []) == [] and seen == []


def test_decode_past_an_estimated_end_returns_what_exists(clips):
    # MPEG-PS declares no count: asking past the end keeps what was found.
    frames = decode(clips["mpeg"], [0, 29, 500])
    assert [f.index for f in frames] == [0, 29]


def test_decode_truncated_clip(broken):
    path = broken["truncated"]
    assert [f.index for f in decode(path, [0, 5])] == [0, 5]  # the intact head still decodes
    with pytest.raises(MediaError) as info:
        decode(path, [0, 40])
    assert info.value.path == str(path)
    assert info.value.reason.startswith("truncated: container declares 48 frames, only ")


@pytest.mark.parametrize("key", ["empty", "not_video", "audio_only"])
def test_decode_unreadable_files(broken, key):
    with pytest.raises(MediaError) as info:
        decode(broken[key], [0])
    assert info.value.path == str(broken[key])


# --- decode: grey, chroma and RGB without swscale ----------------------------

def _yuv_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray, fmt: str) -> av.VideoFrame:
    """A VideoFrame with exactly these planes (no conversion on the way in)."""
    h, w = y.shape
    frame = av.VideoFrame(w, h, fmt)
    for plane, arr in zip(frame.planes, (y, u, v), strict=True):
        assert (plane.height, plane.width) == arr.shape
        buf = np.zeros((plane.height, plane.line_size), np.uint8)
        buf[:, : plane.width] = arr
        plane.update(buf.tobytes())
    return frame


def _write_frames(path: Path, frames: list, codec: str, pix_fmt: str, rotation: int = 0) -> Path:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # pragma: no cover - depends on the FFmpeg build
        pytest.skip(f"no {codec} encoder in this FFmpeg build")
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = frames[0].width, frames[0].height, pix_fmt
        if rotation:
            s.set_display_rotation(rotation)
        for f in frames:
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _chroma_shape(fmt: str, h: int, w: int) -> tuple[int, int]:
    fx, fy = {"yuv420p": (2, 2), "yuv422p": (2, 1), "yuv444p": (1, 1)}[fmt]
    return -(-h // fy), -(-w // fx)


def _random_yuv(rng, fmt: str, h: int, w: int) -> av.VideoFrame:
    """Random luma; random chroma in 16 x 16 blocks of moderate saturation (swscale
    interpolates chroma, we repeat it: the two agree away from chroma edges)."""
    ch, cw = _chroma_shape(fmt, h, w)

    def chroma():
        blocks = rng.integers(80, 177, (-(-ch // 16), -(-cw // 16)), dtype=np.uint8)
        return np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:ch, :cw]

    return _yuv_frame(rng.integers(16, 236, (h, w), dtype=np.uint8), chroma(), chroma(), fmt)


def _swscale_rgb(path: Path, n: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(n))]
    assert len(frames) == n  # the comparisons below zip with these: an empty decode must fail
    return frames


def test_limited_to_full_table():
    y = np.arange(256, dtype=np.uint8)
    full = limited_to_full(y).astype(int)
    assert full[:17].tolist() == [0] * 17 and full[235:].tolist() == [255] * 21
    assert (np.diff(full) >= 0).all()
    inside = np.arange(16, 236)
    assert np.abs(full[16:236] - (inside - 16) * 255 / 219).max() <= 0.5  # rounded, not truncated


LEVELS = [16, 40, 80, 128, 170, 210, 235]


@pytest.mark.parametrize("codec,ext", [("ffv1", "mkv"), ("mpeg4", "avi"), ("libx264", "mp4")])
def test_grey_of_limited_range_yuv420p_is_full_range(tmp_path, codec, ext):
    h, w = 48, 64
    grey_chroma = np.full((h // 2, w // 2), 128, np.uint8)
    frames = [_yuv_frame(np.full((h, w), lv, np.uint8), grey_chroma, grey_chroma, "yuv420p") for lv in LEVELS]
    path = _write_frames(tmp_path / f"levels.{ext}", frames, codec, "yuv420p")
    decoded = decode(path, range(len(LEVELS)))
    assert [f.index for f in decoded] == list(range(len(LEVELS)))
    for f, lv in zip(decoded, LEVELS, strict=True):
        assert f.rgb is None and not f.full_range and f.grey.shape == (h, w)
        expected = (lv - 16) * 255 / 219  # 16 -> 0, 235 -> 255
        assert np.abs(f.grey.astype(float) - expected).max() <= 2, (lv, f.grey.min(), f.grey.max())
        assert np.abs(f.to_rgb().astype(float) - expected).max() <= 3  # neutral chroma: grey RGB


def test_grey_of_full_range_yuvj420p_is_the_luma(tmp_path):
    h, w = 48, 64
    grey_chroma = np.full((h // 2, w // 2), 128, np.uint8)
    levels = [0, 30, 128, 200, 255]
    frames = [_yuv_frame(np.full((h, w), lv, np.uint8), grey_chroma, grey_chroma, "yuvj420p") for lv in levels]
    path = _write_frames(tmp_path / "levels.avi", frames, "mjpeg", "yuvj420p")
    for f, lv in zip(decode(path, range(len(levels))), levels, strict=True):
        assert f.full_range and f.u is not None
        assert np.abs(f.grey.astype(int) - lv).max() <= 2, (lv, f.grey.min(), f.grey.max())


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv422p", "yuv444p"])
def test_planar_yuv_frames_keep_luma_and_chroma(tmp_path, fmt):
    rng = np.random.default_rng(4)
    h, w = 63, 95  # odd sizes: chroma rounds up
    stored = [_random_yuv(rng, fmt, h, w) for _ in range(3)]
    path = _write_frames(tmp_path / f"{fmt}.mkv", stored, "ffv1", fmt)  # lossless
    decoded = decode(path, range(3))
    fx, fy = {"yuv420p": (2, 2), "yuv422p": (2, 1), "yuv444p": (1, 1)}[fmt]
    for f, src in zip(decoded, stored, strict=True):
        y, u, v = (src.planes[i] for i in range(3))
        planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in (y, u, v)]
        assert np.array_equal(f.grey, limited_to_full(planes[0]))
        assert np.array_equal(f.u, planes[1]) and np.array_equal(f.v, planes[2])
        assert f.chroma_factors() == (fx, fy)
    for f, sws in zip(decoded, _swscale_rgb(path, 3), strict=True):
        assert np.abs(f.to_rgb().astype(int) - sws.astype(int)).mean() < 3


@pytest.mark.parametrize("ext", ["mp4", "avi", "mpeg", "mov"])
def test_to_rgb_of_a_colour_phantom_is_close_to_swscale(tmp_path, ext):
    path = tmp_path / f"colour.{ext}"
    write_phantom_clip(path, seed=2, n_frames=8, colour=True)
    decoded = decode(path, range(8))
    for f, sws in zip(decoded, _swscale_rgb(path, 8), strict=True):
        assert f.rgb is None and f.u is not None
        ours = f.to_rgb()
        assert ours.dtype == np.uint8 and ours.shape == sws.shape
        diff = np.abs(ours.astype(int) - sws.astype(int))
        assert diff.mean() < 3
        s = sws.astype(int)
        coloured = (s.max(axis=2) - s.min(axis=2)) > 48  # the Doppler blob
        assert coloured.any() and diff[coloured].mean() < 6
        assert ours is not f.to_rgb() and np.array_equal(ours, f.to_rgb())  # deterministic


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv422p"])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_turns_grey_and_chroma(tmp_path, fmt, rotation):
    rng = np.random.default_rng(rotation)
    stored = [_random_yuv(rng, fmt, 63, 95) for _ in range(2)]
    plain = decode(_write_frames(tmp_path / "plain.mkv", stored, "ffv1", fmt), [0, 1])
    turned = decode(_write_frames(tmp_path / "turned.mkv", stored, "ffv1", fmt, rotation), [0, 1])
    k = rotation // 90
    assert len(plain) == len(turned) == 2
    for a, b in zip(plain, turned, strict=True):
        assert (a.rotation, b.rotation) == (0, rotation)
        assert b.grey.shape == ((95, 63) if k % 2 else (63, 95))
        for name in ("grey", "u", "v"):
            assert np.array_equal(getattr(b, name), np.rot90(getattr(a, name), k)), name
        assert b.grey.flags.c_contiguous and b.u.flags.c_contiguous
        # odd sizes: upsampled chroma must line up the same way after any rotation
        assert np.array_equal(b.to_rgb(), np.rot90(a.to_rgb(), k))
        fx, fy = a.chroma_factors()
        assert b.chroma_factors() == ((fy, fx) if k % 2 else (fx, fy))


@pytest.mark.parametrize("fmt", ["rgb24", "bgr24", "rgba", "bgra", "argb", "abgr", "bgr0", "gray"])
def test_packed_rgb_and_grey_frames_match_swscale(tmp_path, fmt):
    """Packed RGB is reordered in numpy and grey read as is: byte for byte swscale's rgb24."""
    rng = np.random.default_rng(7)
    stored = [av.VideoFrame.from_ndarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), format="rgb24")
              .reformat(format=fmt) for _ in range(3)]
    path = _write_frames(tmp_path / "packed.nut", stored, "rawvideo", fmt)  # odd width: padded lines
    decoded = decode(path, range(3))
    for f, sws in zip(decoded, _swscale_rgb(path, 3), strict=True):
        assert f.u is None
        assert np.array_equal(f.to_rgb(), sws)
        assert np.array_equal(f.grey, to_grey(sws))
        assert (f.rgb is None) == (fmt == "gray")


def test_gif_frames_match_swscale(clips, tmp_path):
    colour = tmp_path / "colour.gif"
    write_phantom_clip(colour, seed=2, n_frames=6, fps=10.0, colour=True)
    for path in (clips["gif"], colour):
        for f, sws in zip(decode(path, range(6)), _swscale_rgb(path, 6), strict=True):
            assert np.array_equal(f.to_rgb(), sws) and np.array_equal(f.grey, to_grey(sws))


def test_is_colour_reads_the_chroma_inside_the_box(tmp_path):
    h, w = 64, 96
    y = np.full((h, w), 100, np.uint8)
    u = np.full((h // 2, w // 2), 128, np.uint8)
    v = u.copy()
    v[:8, :8] = 230  # a red patch in the top-left 16 x 16 pixels
    path = _write_frames(tmp_path / "patch.mkv", [_yuv_frame(y, u, v, "yuv420p")] * 3, "ffv1", "yuv420p")
    frames = decode(path, range(3))
    assert is_colour(frames, Box(0, 0, 40, 40))
    assert not is_colour(frames, Box(20, 20, 60, 40))  # the box, scaled to the chroma grid, misses it
    assert is_colour(frames, Box(15, 15, 40, 40))  # one chroma sample in: 1 of 400 > 0.2 %
    assert not is_colour(frames, Box(16, 16, 40, 40))


# --- crop and colour ---------------------------------------------------------

@pytest.mark.parametrize("shape,ext", [("sector", "mp4"), ("rect", "mp4"), ("sector", "mpeg"), ("rect", "gif")])
def test_crop_finds_scan_region_and_drops_text(tmp_path, shape, ext):
    path = tmp_path / f"{shape}.{ext}"
    truth = write_phantom_clip(path, seed=11, n_frames=36, shape=shape, fps=_fps(ext))
    layout = phantom_layout((224, 192), shape)
    assert truth == layout.scan
    info = probe(path)
    decoded = decode(path, SamplingPolicy(every_n=3).indices(info.n_frames, info.fps))
    frames = [f.grey for f in decoded]
    box = detect_scan_region(frames)
    assert _iou(box, truth) >= 0.85, (box, truth)
    for ui in layout.text:  # title, clock and scale bar lie outside the box
        assert not _overlaps(box, ui), (box, ui)
    rgb = [f.to_rgb() for f in decoded]
    assert detect_scan_region(rgb) == detect_scan_region([to_grey(f) for f in rgb])  # RGB input works too
    assert detect_scan_region(frames) == box  # deterministic


@pytest.mark.parametrize("shape", ["sector", "rect"])
def test_crop_falls_back_on_static_clips(tmp_path, shape):
    path = tmp_path / f"{shape}.mp4"
    truth = write_phantom_clip(path, seed=5, n_frames=4, shape=shape)
    first = decode(path, [0])[0].grey
    for frames in ([first], [first] * 12):  # a single frame; a frozen clip
        box = detect_scan_region(frames)
        assert _iou(box, truth) >= 0.85, (box, truth)
        for ui in phantom_layout((224, 192), shape).text:
            assert not _overlaps(box, ui)


def test_crop_without_a_credible_region_returns_full_frame():
    black = np.zeros((120, 160), np.uint8)
    assert detect_scan_region([black] * 3) == Box(0, 0, 160, 120)
    speck = black.copy()
    speck[50:54, 70:74] = 200  # a tiny blob is not a scan region
    assert detect_scan_region([speck]) == Box(0, 0, 160, 120)


def test_box_helpers():
    b = Box.from_list([2, 3, 4, 5])
    assert b.as_list() == [2, 3, 4, 5] and b.area == 20
    a = np.arange(100 * 3, dtype=np.uint8).reshape(10, 10, 3)
    v = b.apply(a)
    assert v.shape == (5, 4, 3) and np.shares_memory(v, a)
    assert np.array_equal(v, a[3:8, 2:6])


@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_is_colour(tmp_path, ext):
    grey = tmp_path / f"grey.{ext}"
    colour = tmp_path / f"colour.{ext}"
    box = write_phantom_clip(grey, seed=2, n_frames=8, fps=_fps(ext))
    write_phantom_clip(colour, seed=2, n_frames=8, fps=_fps(ext), colour=True)
    grey_frames = decode(grey, range(8))
    colour_frames = decode(colour, range(8))
    assert not is_colour(grey_frames, box)
    assert not is_colour(grey_frames, Box(0, 0, 224, 192))
    assert is_colour(colour_frames, box)
    assert is_colour(colour_frames)
    # the same decisions from RGB arrays (swscale's, and the frames' own conversion)
    sws = {}
    for name, path in (("grey", grey), ("colour", colour)):
        with av.open(str(path)) as c:
            sws[name] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:8]
    assert not is_colour(sws["grey"], box) and is_colour(sws["colour"], box)
    assert not is_colour([f.to_rgb() for f in grey_frames], box)
    assert is_colour([f.to_rgb() for f in colour_frames], box)
    assert not is_colour([f.grey for f in colour_frames], box)  # 2-D frames carry no colour


# --- pixels ------------------------------------------------------------------

def test_to_grey_is_integer_bt601():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8)
    assert to_grey(rgb).tolist() == [[76, 150, 29, 255, 0]]
    g = np.zeros((3, 4), np.uint8)
    assert to_grey(g) is g


def test_near_duplicate_catches_frozen_frames(tmp_path):
    path = tmp_path / "frozen.mp4"
    write_phantom_clip(path, seed=4, n_frames=24, frozen=4)
    frames = [f.grey for f in decode(path, range(24))]
    dup = [i for i in range(1, 24) if near_duplicate(frames[i - 1], frames[i], threshold=1.0)]
    assert len(dup) == 4 and dup == list(range(dup[0], dup[0] + 4))
    assert not near_duplicate(frames[0], frames[0][:, :100], threshold=1.0)  # sizes differ
    assert not near_duplicate(frames[0][:0], frames[1][:0], threshold=1.0)  # no pixels: nothing to repeat


def test_near_duplicate_decides_at_the_exact_mean_difference():
    """The mean absolute difference is summed in integers: a threshold at it is not below it, one a float
    step above it is."""
    rng = np.random.default_rng(3)
    for h, w in ((1, 1), (7, 300), (350, 350), (480, 640)):
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-3, 4, (h, w)), 0, 255).astype(np.uint8)
        step = max(1, max(h, w) // 128)  # the strided subsampling near_duplicate compares on
        mean = float(np.abs(a[::step, ::step].astype(np.int16) - b[::step, ::step].astype(np.int16)).mean())
        assert not near_duplicate(a, b, mean) and near_duplicate(a, b, np.nextafter(mean, 256))


def test_encode_png_is_deterministic_and_lossless():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (40, 56), dtype=np.uint8),
                rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)):
        for level in (1, 6):
            data = encode_png(arr, level)
            assert data == encode_png(arr.copy(), level)
            img = Image.open(io.BytesIO(data))
            assert img.mode == ("L" if arr.ndim == 2 else "RGB")
            assert np.array_equal(np.asarray(img), arr)
            chunks, i = [], 8
            while i < len(data):
                (n,) = struct.unpack(">I", data[i:i + 4])
                chunks.append(data[i + 4:i + 8])
                i += 12 + n
            assert chunks == [b"IHDR", b"IDAT", b"IEND"]  # no metadata chunks


def test_pixel_sha256():
    a = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert pixel_sha256(a) == pixel_sha256(a.copy())
    assert pixel_sha256(a) != pixel_sha256(a.reshape(6, 4))  # the shape is hashed
    assert pixel_sha256(a[:, ::2]) == pixel_sha256(np.ascontiguousarray(a[:, ::2]))
    import hashlib
    assert pixel_sha256(a) == hashlib.sha256(b"4x6\n" + a.tobytes()).hexdigest()


def test_dhash_near_and_far(clips):
    grey = decode(clips["mp4"], [0])[0].grey
    rng = np.random.default_rng(1)
    noisy = np.clip(grey.astype(int) + rng.normal(0, 4, grey.shape).round(), 0, 255).astype(np.uint8)
    h = dhash(grey)
    assert 0 <= h < 2 ** 64 and isinstance(h, int)
    assert dhash(grey) == h
    assert bin(h ^ dhash(noisy)).count("1") <= 6
    assert bin(h ^ dhash(np.ascontiguousarray(grey[::-1]))).count("1") >= 16
    assert bin(h ^ dhash(rng.integers(0, 256, grey.shape, dtype=np.uint8))).count("1") >= 16


# --- phantom -----------------------------------------------------------------

@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_phantom_is_deterministic(tmp_path, ext):
    a, b = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
    assert write_phantom_clip(a, seed=9, n_frames=12) == write_phantom_clip(b, seed=9, n_frames=12)
    assert a.read_bytes() == b.read_bytes()


def test_phantom_differs_by_seed(tmp_path):
    a = tmp_path / "a.avi"
    write_phantom_clip(a, seed=9, n_frames=6)
    c = tmp_path / "c.avi"
    write_phantom_clip(c, seed=10, n_frames=6)
    assert c.read_bytes() != a.read_bytes()


def test_phantom_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_phantom_clip(tmp_path / "x.webm", seed=0)
    with pytest.raises(ValueError):
        write_phantom_clip(tmp_path / "x.mp4", seed=0, size=(225, 192))
    with pytest.raises(ValueError):
        write_phantom_clip(tmp_path / "x.mp4", seed=0, shape="circle")


# --- the CLI -----------------------------------------------------------------

def test_cli_probe_lists_every_clip(clips, broken, tmp_path):
    runner = CliRunner()
    folder = clips["mp4"].parent
    (folder / ".hidden.mp4").write_bytes(b"")  # hidden files are skipped
    ok = runner.invoke(main, ["probe", str(folder)])
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert lines[0].split()[:3] == ["path", "container", "codec"] and "problem" in lines[0]
    for ext, path in clips.items():
        row = next(line for line in lines if line.startswith(str(path)))
        assert CONTAINERS[ext] in row.split() and "224x192" in row and "30" in row.split()
    assert ".hidden" not in ok.output

    bad = runner.invoke(main, ["probe", str(clips["gif"]), str(broken["empty"]), str(broken["not_video"])])
    assert bad.exit_code == 1
    assert str(clips["gif"]) in bad.output
    assert "empty file" in bad.output and "cannot open:" in bad.output

    assert "PATHS" in runner.invoke(main, ["probe", "--help"]).output


# --- the POCUS sample --------------------------------------------------------

@pytest.mark.slow
def test_pocus_sample_probes_and_decodes():
    if not POCUS_VIDEOS.is_dir():
        pytest.skip(f"POCUS sample not found at {POCUS_VIDEOS.resolve()} (../shared/pocus)")
    paths = sorted(p for p in POCUS_VIDEOS.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert paths
    for path in paths:
        info = probe(path)
        assert info.n_frames > 0 and info.fps > 0, info
        wanted = POCOVID.indices(info.n_frames, info.fps)[:3]
        frames = decode(path, wanted)
        assert [f.index for f in frames] == wanted, path
        assert frames[0].grey.shape == (info.height, info.width)
