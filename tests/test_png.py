"""us4's PNG encoder: lossless on every shape and level, on real frames too; the lock names it; and a
rebuild whose shards differ from a manifest's only because another encoder wrote them is reproduced."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from us4.builder.environment import byte_libraries
from us4.media.decode import decode
from us4.media.pixels import PNG_ENCODER, encode_png, pixel_sha256
from us4.release.read import read_lock_ref
from us4.release.verify import DIFFERS, REPRODUCED, compare_to_manifest

from .conftest import REPO, pocus_sample_or_skip

BLUES = REPO.parent / "shared" / "blues" / "lus_videos"


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        im.load()  # Pillow checks every chunk's CRC as it reads
        return np.asarray(im)


def chunks(png: bytes) -> list[bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(png):
        (length,), kind = struct.unpack(">I", png[at:at + 4]), png[at + 4:at + 8]
        data, (crc,) = png[at + 8:at + 8 + length], struct.unpack(">I", png[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + data) == crc
        kinds.append(kind)
        at += 12 + length
    return kinds


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (37, 53), (2, 3, 3), (1, 1, 3), (48, 31, 3)])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_shape_and_level_decodes_to_its_pixels(shape, level):
    rng = np.random.default_rng(sum(shape) * 10 + level)
    # noise, flat runs and a ramp: what the filter and the run-length search meet in a scan
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    arr[: shape[0] // 2] = 0
    arr[-1:] = np.arange(shape[1], dtype=np.uint8)[:, None] if arr.ndim == 3 else np.arange(shape[1], dtype=np.uint8)
    png = encode_png(arr, level)
    out = decoded(png)
    assert out.shape == arr.shape and pixel_sha256(out) == pixel_sha256(arr)
    assert chunks(png) == [b"IHDR", b"IDAT", b"IEND"]  # no metadata chunk: nothing but pixels


def test_level_1_is_the_run_length_search_and_same_input_same_bytes():
    arr = np.zeros((64, 64), np.uint8)
    arr[20:40, 10:50] = 200
    one, six = encode_png(arr, 1), encode_png(arr, 6)
    assert one == encode_png(arr.copy(), 1) and one != six
    assert np.array_equal(decoded(one), decoded(six))


@pytest.mark.parametrize("arr, error", [(np.zeros((4, 4), np.uint16), "expects uint8"),
                                        (np.zeros((4, 4, 4), np.uint8), "H x W or H x W x 3"),
                                        (np.zeros((0, 4), np.uint8), "no PNG has a 4x0 image")])
def test_what_is_no_8_bit_image_is_refused(arr, error):
    with pytest.raises(ValueError, match=error):
        encode_png(arr, 1)


def test_the_lock_names_the_encoder_and_its_zlib():
    assert byte_libraries()["png"] == f"{PNG_ENCODER}; zlib {zlib.ZLIB_RUNTIME_VERSION}"


def real_clips() -> list:
    pocus = pocus_sample_or_skip() / "pocus_videos" / "convex"
    clips = [pocus / "Cov-Atlas+(44).gif", pocus / "Reg-NormalLungs.mp4", *sorted(pocus.glob("Pneu*.mp4"))[:1]]
    if BLUES.is_dir():
        clips += sorted(BLUES.iterdir())[:2]
    return clips


def test_every_frame_of_real_clips_comes_back_pixel_for_pixel():
    """Every decoded frame (grey, and RGB where a clip has colour) of real POCUS clips (a GIF and
    MP4s) and, where present, COVID-BLUES clips."""
    frames = 0
    for clip in real_clips():
        for frame in decode(clip, range(10_000)):
            for pixels in (frame.grey, *((frame.to_rgb(),) if frame.rgb is not None or frame.u is not None else ())):
                assert np.array_equal(decoded(encode_png(pixels, 1)), pixels), clip.name
            frames += 1
    assert frames > 300


# --- a rebuild against a manifest whose frames another encoder wrote -------------------------------

@pytest.fixture(scope="module")
def manifest():
    return read_lock_ref(REPO / "manifests" / "pocus-1.2.0.json")[0]


def rebuilt(manifest, png: str | None, shard_sha: str | None = None, frame_sha: str | None = None):
    """The manifest as a rebuild here would record it: another encoder, its first frames shard's
    bytes, or one frame's pixels changed."""
    update: dict = {}
    if png is not None:
        update["environment"] = manifest.environment.model_copy(
            update={"bytes": {**manifest.environment.bytes, "png": png}})
    if shard_sha is not None:
        update["shards"] = [manifest.shards[0].model_copy(update={"sha256": shard_sha}), *manifest.shards[1:]]
    if frame_sha is not None:
        first = manifest.clips[0]
        update["clips"] = [first.model_copy(update={"frame_sha256": [frame_sha, *first.frame_sha256[1:]]}),
                           *manifest.clips[1:]]
    return manifest.model_copy(update=update)


def test_shards_another_encoder_wrote_with_every_pixel_the_manifests_are_reproduced(manifest):
    assert "png" not in manifest.environment.bytes  # us4 0.3 had Pillow encode, and said nothing
    report = compare_to_manifest(rebuilt(manifest, byte_libraries()["png"], shard_sha="0" * 64), manifest)
    assert report.verdict == REPRODUCED, report.lines()
    summary = report.lines()[0]
    assert "identical pixels, labels and splits; 1 shards differ in bytes alone" in summary
    assert PNG_ENCODER in summary and f"Pillow {manifest.environment.bytes['pillow']}" in summary


def test_shards_that_differ_under_the_same_encoder_differ(manifest):
    report = compare_to_manifest(rebuilt(manifest, None, shard_sha="0" * 64), manifest)
    assert report.verdict == DIFFERS and "only the encoded bytes differ" in report.lines()[0]


def test_another_encoder_never_excuses_a_videos_shard_that_differs(manifest):
    """A videos shard holds no PNG: other bytes there are another release's rows, whoever encoded frames."""
    videos = next(k for k, s in enumerate(manifest.shards) if s.config == "videos")
    lock = rebuilt(manifest, byte_libraries()["png"], shard_sha="0" * 64)
    lock = lock.model_copy(update={"shards": [s.model_copy(update={"sha256": "1" * 64}) if k == videos else s
                                              for k, s in enumerate(lock.shards)]})
    report = compare_to_manifest(lock, manifest)
    assert report.verdict == DIFFERS and manifest.shards[videos].path in report.lines()[-1]


def test_another_encoder_never_excuses_other_pixels(manifest):
    report = compare_to_manifest(rebuilt(manifest, byte_libraries()["png"], shard_sha="0" * 64, frame_sha="1" * 64),
                                 manifest)
    assert report.verdict == DIFFERS and report.counts()["frames with other pixels"] == 1


def test_what_a_manifest_names_its_encoder_is_shown_on_one_line_never_obeyed(manifest):
    """A manifest's environment strings reach the console: control characters are shown escaped."""
    lock = rebuilt(manifest, "evil\x1b[2J\nverdict: reproduced", shard_sha="0" * 64)
    lines = compare_to_manifest(lock, manifest).lines()
    assert all("\x1b" not in line and "\n" not in line for line in lines)
    assert any("evil\\x1b[2J\\nverdict: reproduced" in line for line in lines)
