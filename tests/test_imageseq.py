"""Tests of image-sequence input (us4.media.imageseq through us4.media.clips): folders of
numbered PNG/JPEG/TIFF frames written here with Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from us4.media import ClipRef, MediaError, decode_clip, find_clips, probe_clip, to_grey
from us4.media import imageseq as imageseq_mod
from us4.phantom import write_phantom_sequence

SIZE = (64, 48)


def seq(folder: Path, **kw) -> list[Path]:
    args = dict(seed=2, n_frames=6, size=SIZE)
    args.update(kw)
    return write_phantom_sequence(folder, **args)


def ref(files, fps=10.0) -> ClipRef:
    return ClipRef("image_sequence", tuple(str(f) for f in files), fps)


@pytest.mark.parametrize("ext,codec", [(".png", "png"), (".jpg", "jpeg"), (".tif", "tiff")])
def test_probe_a_sequence(tmp_path, ext, codec):
    files = seq(tmp_path / "s", ext=ext)
    info = probe_clip(ref(files, fps=12.5))
    assert (info.kind, info.container, info.codec, info.transfer_syntax) == ("image_sequence", "image_sequence",
                                                                             codec, None)
    assert (info.n_frames, info.fps, info.duration, info.timing) == (6, 12.5, pytest.approx(6 / 12.5), "recipe")
    assert (info.width, info.height, info.photometric, info.bits, info.pix_fmt) == (64, 48, "MONOCHROME2", 8, "L")
    assert info.path == str(tmp_path / "s") and info.frames_counted and info.attributes == {}


def test_a_sequence_needs_the_recipe_rate(tmp_path):
    files = seq(tmp_path / "s")
    for call in (lambda: probe_clip(ref(files, fps=None)), lambda: decode_clip(ref(files, fps=None), [0])):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.path == str(tmp_path / "s") and err.value.reason.startswith("no frame rate")


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_decode_grey_frames_exactly(tmp_path, ext):
    files = seq(tmp_path / "s", ext=ext)
    frames = decode_clip(ref(files), [4, 1])
    assert [f.index for f in frames] == [1, 4] and [f.pts for f in frames] == pytest.approx([0.1, 0.4])
    for f in frames:
        assert f.rgb is None and f.u is None
        assert np.array_equal(f.grey, np.asarray(Image.open(files[f.index])))


def test_decode_jpeg_frames_close_to_the_source(tmp_path):
    png = decode_clip(ref(seq(tmp_path / "p")), range(6))
    jpg = decode_clip(ref(seq(tmp_path / "j", ext=".jpg")), range(6))
    assert [f.index for f in png] == [f.index for f in jpg] == list(range(6))
    for a, b in zip(png, jpg, strict=True):
        assert np.abs(a.grey.astype(int) - b.grey.astype(int)).mean() < 3


def test_colour_frames_keep_rgb_and_grey_rgb_frames_do_not(tmp_path):
    files = seq(tmp_path / "c", colour=True)
    assert probe_clip(ref(files)).photometric == "RGB"
    frames = decode_clip(ref(files), range(6))
    for f in frames:
        stored = np.asarray(Image.open(files[f.index]))
        assert np.array_equal(f.rgb, stored) and np.array_equal(f.grey, to_grey(stored))
    grey_rgb = tmp_path / "g"
    grey_rgb.mkdir()
    for i, src in enumerate(seq(tmp_path / "grey")):
        Image.open(src).convert("RGB").save(grey_rgb / f"f{i}.png")
    for f in decode_clip(ref(sorted(grey_rgb.iterdir())), range(6)):
        assert f.rgb is None  # R = G = B everywhere: a grey frame
    palette = tmp_path / "p"
    palette.mkdir()
    for i, src in enumerate(files):
        Image.open(src).quantize(64).save(palette / f"f{i}.png")
    pal = sorted(palette.iterdir())
    assert probe_clip(ref(pal)).photometric == "PALETTE COLOR"
    f = decode_clip(ref(pal), [2])[0]
    assert np.array_equal(f.rgb, np.asarray(Image.open(pal[2]).convert("RGB")))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_frames_map_the_full_range(tmp_path, ext):
    deep = seq(tmp_path / "d", ext=ext, bits=16)
    info = probe_clip(ref(deep))
    assert info.bits == 16 and np.asarray(Image.open(deep[0])).max() > 255
    plain = decode_clip(ref(seq(tmp_path / "p")), range(6))
    assert len(plain) == 6
    for a, b in zip(decode_clip(ref(deep), range(6)), plain, strict=True):
        assert np.array_equal(a.grey, b.grey)  # v * 257 -> round(v * 257 * 255 / 65535) = v


def test_natural_order(tmp_path):
    seq(tmp_path / "n", n_frames=12, pad=1)
    (found,), _ = find_clips("image_sequence", tmp_path, fps=10)
    assert [Path(f).name for f in found.files] == [f"frame_{i}.png" for i in range(1, 13)]
    tenth = decode_clip(found.ref, [9])[0]
    assert np.array_equal(tenth.grey, np.asarray(Image.open(tmp_path / "n" / "frame_10.png")))


def test_gaps_repeats_mixed_sizes_and_unreadable_frames(tmp_path):
    files = seq(tmp_path / "gap")
    files[2].unlink()
    gap = files[:2] + files[3:]
    for call in (lambda: probe_clip(ref(gap)), lambda: decode_clip(ref(gap), [0])):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.path == str(files[3])
        assert err.value.reason == "gap in the frame numbering: frame_0002.png is followed by frame_0004.png"

    twice = seq(tmp_path / "twice", pad=1)
    (tmp_path / "twice" / "frame_01.png").write_bytes(twice[0].read_bytes())
    (found,), _ = find_clips("image_sequence", tmp_path / "twice", fps=10)
    with pytest.raises(MediaError, match=r"two frames numbered 1 \(frame_01.png and frame_1.png\)"):
        probe_clip(found.ref)

    mixed = seq(tmp_path / "mixed")
    Image.new("L", (64, 50)).save(mixed[4])
    for call in (lambda: probe_clip(ref(mixed)), lambda: decode_clip(ref(mixed), [0, 4])):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.path == str(mixed[4])
        assert err.value.reason == "mixed sizes: frame_0005.png is 64x50, frame_0001.png is 64x48"

    bad = seq(tmp_path / "bad")
    bad[1].write_bytes(b"this is not a picture" * 10)
    with pytest.raises(MediaError) as err:
        probe_clip(ref(bad))
    assert err.value.path == str(bad[1]) and err.value.reason.startswith("unreadable frame")

    cut = seq(tmp_path / "cut")
    data = cut[3].read_bytes()
    cut[3].write_bytes(data[: len(data) // 2])  # the header survives: probing passes, decoding fails
    assert probe_clip(ref(cut)).n_frames == 6
    assert [f.index for f in decode_clip(ref(cut), [0, 2])] == [0, 2]
    with pytest.raises(MediaError) as err:
        decode_clip(ref(cut), [3])
    assert err.value.path == str(cut[3]) and err.value.reason.startswith("unreadable frame")


def test_decode_reads_only_the_wanted_files(tmp_path, monkeypatch):
    files = seq(tmp_path / "s", n_frames=10)
    opened = []
    original = imageseq_mod._open
    monkeypatch.setattr(imageseq_mod, "_open", lambda p: opened.append(p.name) or original(p))
    frames = decode_clip(ref(files), [7, 2, 30])
    assert [f.index for f in frames] == [2, 7]  # past the end: left out
    assert opened == ["frame_0001.png", "frame_0003.png", "frame_0008.png"]  # the first only for its size
    assert decode_clip(ref(files), []) == []
    with pytest.raises(MediaError, match="none of the wanted indices"):
        decode_clip(ref(files), [10])


def test_find_sequences_in_a_tree(tmp_path):
    root = tmp_path / "raw"
    seq(root / "case1" / "seq_a", n_frames=3)
    seq(root / "case1" / "seq_b", n_frames=4, ext=".jpg")
    seq(root / "case2", n_frames=2, ext=".tiff")
    (root / "case1" / "annotation.txt").write_text("x 1 2\n")
    (root / "README").write_text("read me\n")
    seq(root / ".cache", n_frames=2)
    (root / "case2" / ".frame_0003.tiff").write_bytes(b"")
    found, others = find_clips("image_sequence", root)
    assert [(c.rel, len(c.files)) for c in found] == [("case1/seq_a", 3), ("case1/seq_b", 4), ("case2", 2)]
    assert all(c.ref.kind == "image_sequence" and c.ref.fps is None for c in found)
    assert [(o.rel, o.reason) for o in others] == [
        ("README", "not an image frame (no suffix)"), ("case1/annotation.txt", "not an image frame (suffix '.txt')")]
    found, _ = find_clips("image_sequence", root, fps=25)
    assert probe_clip(found[2].ref).fps == 25.0
    (root / "case2" / "frame_0001.tiff").rename(root / "frame_0001.png")  # frames right in the root
    found, _ = find_clips("image_sequence", root)
    assert found[0].rel == "."


def test_phantom_sequence_is_deterministic(tmp_path):
    a = [p.read_bytes() for p in seq(tmp_path / "a", colour=True)]
    assert a == [p.read_bytes() for p in seq(tmp_path / "b", colour=True)]
    assert a != [p.read_bytes() for p in seq(tmp_path / "c", colour=True, seed=3)]
    with pytest.raises(ValueError):
        seq(tmp_path / "x", ext=".gif")
    with pytest.raises(ValueError):
        seq(tmp_path / "x", ext=".jpg", bits=16)
