"""Bounded work on hostile input (issue 14, sections 4 and 5's DICOM items): a frame-size limit
read from headers before decoding, sampling that allocates by the frames a clip has, recipes
and locks of bounded size and depth (YAML aliases counted expanded), folds that cannot stay
empty, an inherited release of another recipe said so, and DICOM views, regions and transfer
syntaxes that are reported, never dropped or misnamed in silence."""
from __future__ import annotations

import importlib
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
import yaml
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.contract import lock as lock_module
from us4.contract.lock import LOCK_NAME, LockError, Stage, WarningKind, read_lock
from us4.errors import RecipeError
from us4.hub.download import staging_dir
from us4.hub.mirror import serve_mirror
from us4.media import Box, MediaError, Region, SamplingPolicy
from us4.media.clips import ClipRef, probe_clip
from us4.phantom import write_phantom_clip, write_phantom_dicom, write_phantom_sequence
from us4.recipe import DEFAULT_MAX_FRAME_PIXELS, MAX_RECIPE_BYTES, load_recipe, packaged_recipes, parse_recipe
from us4.release.read import open_release

from .conftest import REPO


def recipe_file(tmp: Path, name: str = "r.yaml", top: dict | None = None, **source) -> Path:
    """A recipe of one declared video source `clips` (classes a and b from file-name prefixes)."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["a", "b"], "label": {"prefix": True},
            "sampling": {"every_n": 4}, "text": "off", **source}
    raw = {"name": "bounds", "version": "0.0.1", "seed": 1, "sources": {"clips": spec}, "dedup": {"threshold": 0},
           "splits": {"kind": "holdout", "validation": 0.5}, **(top or {})}
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def videos(folder: Path, names: list[str], size: tuple[int, int] = (96, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_phantom_clip(folder / name, seed=i, n_frames=8, size=size, text=None)
    return folder


def one_line_error(result) -> str:
    """The CLI's answer to bad input: exit 1 and exactly one line, `us4: error: ...`."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("us4: error: "), result.output
    return lines[0]


# --- the frame-size limit ---------------------------------------------------------------


def test_a_frame_over_the_limit_is_a_probe_failure_in_the_ledger(tmp_path):
    raw = videos(tmp_path / "raw", ["a_small.mp4", "b_small.mp4"])
    videos(raw, ["a_large.mp4"], size=(128, 96))
    out = tmp_path / "rel"
    build_release(recipe_file(tmp_path, max_frame_pixels=96 * 64), {"clips": raw}, out, workers=1, progress=False)
    lock = open_release(out).lock
    (failure,) = lock.failures
    assert (failure.video_id, failure.stage) == ("clips/a_large.mp4", Stage.PROBE)
    assert failure.reason == "frame 128x96 is larger than the recipe's limit of 6,144 pixels (max_frame_pixels)"
    assert len(lock.clips) == 2 and lock.recipe.sources["clips"].max_frame_pixels == 6144  # stated


def test_the_default_limit_is_stated_in_the_lock_and_bounded_in_the_recipe(tmp_path):
    assert load_recipe("pocus").to_dict()["sources"]["pocus"]["max_frame_pixels"] == DEFAULT_MAX_FRAME_PIXELS
    for bad in (0, 2.5, "16M", 16384 * 16384 + 1):
        with pytest.raises(RecipeError, match="max_frame_pixels must be a whole number from 1 to 268,435,456"):
            load_recipe(recipe_file(tmp_path, max_frame_pixels=bad))


def test_the_limit_is_read_from_the_header_before_any_frame_is_decoded(tmp_path, monkeypatch):
    clip = tmp_path / "v.mp4"
    write_phantom_clip(clip, seed=1, n_frames=4, size=(96, 64))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(importlib.import_module("us4.media.probe"), "_scan", no_decoding)
    with pytest.raises(MediaError, match="frame 96x64 is larger than the recipe's limit of 6,143 pixels"):
        probe_clip(ClipRef("video", (str(clip),)), max_pixels=96 * 64 - 1)
    dicom = write_phantom_dicom(tmp_path / "d.dcm", seed=1, n_frames=3, size=(96, 80))
    with pytest.raises(MediaError, match="frame 96x80 is larger"):
        probe_clip(ClipRef("dicom", tuple(map(str, dicom))), max_pixels=96 * 80 - 1)
    sequence = write_phantom_sequence(tmp_path / "seq", seed=1, n_frames=3, size=(96, 80))
    with pytest.raises(MediaError, match="frame 96x80 is larger"):
        probe_clip(ClipRef("image_sequence", tuple(map(str, sequence)), fps=10), max_pixels=96 * 80 - 1)
    assert probe_clip(ClipRef("dicom", tuple(map(str, dicom))), max_pixels=96 * 80).width == 96


# this process's peak RSS (VmHWM, of its own memory only: ru_maxrss counts the parent's too)
PROBE_PEAK = """
import re, sys
from us4.media.clips import ClipRef, probe_clip
from us4.media import MediaError
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
before = peak_kib()
try:
    probe_clip(ClipRef("video", (sys.argv[1],)), max_pixels=10_000)
except MediaError as exc:
    print(exc.reason)
print(peak_kib() - before)
"""


def test_refusing_a_large_frame_takes_no_memory_for_it(tmp_path):
    """FFmpeg decodes frames while it opens a file (to learn an H.264 stream's decode delay):
    the limit is checked on a header read with decoding off, so a 4000x4000 clip (24 MB a
    frame) is refused in less memory than one of its luma planes."""
    import av
    import numpy as np

    clip = tmp_path / "big.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 4000
        s.pix_fmt, s.options = "yuv420p", {"crf": "51", "preset": "ultrafast"}
        for pkt in [*s.encode(av.VideoFrame.from_ndarray(np.zeros((4000, 4000, 3), np.uint8), format="rgb24")),
                    *s.encode()]:
            c.mux(pkt)
    run = subprocess.run([sys.executable, "-c", PROBE_PEAK, str(clip)], capture_output=True, text=True, check=True)
    reason, grown_kib = run.stdout.splitlines()
    assert reason == "frame 4000x4000 is larger than the recipe's limit of 10,000 pixels (max_frame_pixels)"
    assert int(grown_kib) < 16_000, f"probing grew by {grown_kib} KiB"


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height and holds one row of pixels: its header is the bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))
    return path


def test_image_headers_declaring_huge_frames_fail_as_media_errors(tmp_path):
    big = png_header(tmp_path / "big" / "f001.png", 5000, 5000)  # over the default, under Pillow's own limit
    with pytest.raises(MediaError, match="frame 5000x5000 is larger than the recipe's limit of 16,777,216"):
        probe_clip(ClipRef("image_sequence", (str(big),), fps=10), max_pixels=DEFAULT_MAX_FRAME_PIXELS)
    bomb = png_header(tmp_path / "bomb" / "f001.png", 20000, 20000)  # Pillow refuses to open it at all
    with pytest.raises(MediaError, match="frame too large to open"):
        probe_clip(ClipRef("image_sequence", (str(bomb),), fps=10))


# --- sampling -------------------------------------------------------------------------------


def test_sampling_allocates_by_the_frames_a_clip_has():
    tracemalloc.start()
    try:
        kept = SamplingPolicy(evenly=1_000_000).indices(32, 30.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == list(range(32)) and peak < 100_000  # a million spots would take 8 MB for 32 frames
    assert SamplingPolicy(evenly=40).indices(100, 25.0) == SamplingPolicy(evenly=40).indices(100, 25.0)
    assert SamplingPolicy(rate_hz=0.001).indices(10, 9999.0) == [0]


@pytest.mark.parametrize("sampling, message", [
    ("{evenly: 100000000}", "evenly must be a whole number from 1 to 1,000,000, got 100000000"),
    ("{evenly: 100000000000}", "evenly must be a whole number from 1 to 1,000,000"),
    ("{evenly: 1e11}", "evenly must be a whole number from 1 to 1,000,000, got '1e11'"),
    ("{evenly: 1.0e+11}", "evenly must be a whole number"),
    ("{every_n: 2.5}", "every_n must be a whole number"),
    ("{rate_hz: 1.0e-320}", "rate_hz must be a number of frames per second from 0.001 to 10,000"),
    ("{rate_hz: .inf}", "sources.clips.sampling.rate_hz: inf is not a finite number"),
])
def test_absurd_sampling_is_one_recipe_error(tmp_path, sampling, message):
    path = recipe_file(tmp_path)
    path.write_text(path.read_text().replace("sampling:\n      every_n: 4", f"sampling: {sampling}"))
    result = CliRunner().invoke(main, ["build", str(path), "--raw", f"clips={tmp_path}", "--out", str(tmp_path / "o")])
    assert message in one_line_error(result)


# --- recipes: size, depth, aliases, types ---------------------------------------------------


def alias_bomb(tmp: Path) -> Path:
    """trust.sh's recipe: a 504-byte description that YAML aliases expand 9^7 times."""
    levels = ["&a0 [" + ",".join(["lol"] * 9) + "]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                                        for i in range(1, 7)]
    path = recipe_file(tmp, "bomb.yaml", top={"description": "trust check"})
    path.write_text("\n".join("description: [" + ", ".join(levels) + "]" if line.startswith("description:") else line
                              for line in path.read_text().splitlines()) + "\n")
    return path


def test_yaml_aliases_count_at_their_expanded_size(tmp_path):
    bomb = alias_bomb(tmp_path)
    assert "description: [&a0" in bomb.read_text()
    result = CliRunner().invoke(main, ["build", str(bomb), "--raw", f"clips={tmp_path}", "--out", str(tmp_path / "o")])
    assert "its YAML aliases expand it past 1,048,576 bytes" in one_line_error(result)
    assert not (tmp_path / "o").exists()
    endless = recipe_file(tmp_path, "endless.yaml")
    endless.write_text(endless.read_text().replace("classes:", "x: &me [*me]\n    classes:"))
    with pytest.raises(RecipeError, match=r"the YAML alias \*me on line \d+ lies inside the value it names"):
        load_recipe(endless)
    shared = tmp_path / "shared.yaml"  # an anchor shared by two sources is fine
    shared.write_text("name: s\nversion: '1'\nsources:\n"
                      "  one: &src {organ: lung, classes: [a], label: {constant: a}, sampling: {every_n: 2}}\n"
                      "  two: *src\n")
    recipe = load_recipe(shared)
    assert recipe.sources["one"].sampling == recipe.sources["two"].sampling and len(recipe.sources) == 2


def test_recipe_size_depth_and_strings_are_bounded(tmp_path):
    big = recipe_file(tmp_path, "big.yaml", top={"description": "x" * MAX_RECIPE_BYTES})
    with pytest.raises(RecipeError, match=r"a recipe holds at most 1,048,576 bytes, this file has 1,04\d,\d{3}"):
        load_recipe(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: d\nversion: '1'\nsources: " + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(RecipeError, match="nested more than 12 levels deep"):
        load_recipe(deep)
    good = yaml.safe_load(recipe_file(tmp_path).read_text())
    for change, message in (({"description": "d" * 20_001}, "description: 20,001 characters; at most 20,000"),
                            ({"description": ["a", "list"]}, "description must be text, got list"),
                            ({"name": "n" * 5000}, "name: 5,000 characters; at most 4,096"),
                            ({"seed": 2 ** 70}, "a whole number of more than 64 bits"),
                            ({"seed": "7"}, "seed must be a whole number"),
                            ({"dedup": {"threshold": float("nan")}}, "dedup.threshold: nan is not a finite number"),
                            ({"output": {"shard_max_mb": float("inf")}}, "output.shard_max_mb: inf is not a finite")):
        with pytest.raises(RecipeError, match=message):
            parse_recipe({**good, **change})


def test_shipped_recipes_and_manifests_stay_well_within_the_bounds():
    for path in packaged_recipes():
        assert path.stat().st_size < MAX_RECIPE_BYTES / 100
        load_recipe(path)
    # A lock grows by about 100 bytes per frame (blues-1.0.0: 821 kB for 7,931 frames), so a
    # hundredth of the bound still holds a corpus of 50,000 frames, twice US-4.
    for path in sorted((REPO / "manifests").glob("*.json")):
        assert path.stat().st_size < lock_module.MAX_LOCK_BYTES / 100
        read_lock(path.read_bytes(), str(path))


# --- locks: size and depth ----------------------------------------------------------------


def deep_lock(depth: int) -> str:
    return '{"format": "us4-release/2", "clips": ' + "[" * depth + "]" * depth + "}"


def test_a_deep_or_huge_lock_is_one_lock_error(tmp_path, monkeypatch):
    for depth in (17, 990, 200_000):
        with pytest.raises(LockError, match="release.json: nested more than 16 levels deep"):
            read_lock(deep_lock(depth))
    folder = tmp_path / "rel"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(deep_lock(200_000))
    assert "nested more than 16 levels deep" in one_line_error(CliRunner().invoke(main, ["verify", str(folder)]))
    manifest = (REPO / "manifests" / "pocus-1.1.0.json").read_bytes()
    monkeypatch.setattr(lock_module, "MAX_LOCK_BYTES", len(manifest) - 1)
    with pytest.raises(LockError, match=f"{len(manifest):,} bytes; a lock holds at most {len(manifest) - 1:,}"):
        read_lock(manifest)


def test_a_download_refused_for_its_deep_lock_leaves_nothing_behind(tmp_path):
    repo = tmp_path / "mirror" / "datasets" / "org" / "deep-phantom"
    repo.mkdir(parents=True)
    (repo / LOCK_NAME).write_text(deep_lock(200_000))
    for args in (["init", "-q", "-b", "main"], ["add", "--all"], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                                    "commit", "-qm", "deep"], ["tag", "v1.0.0"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    out = tmp_path / "dl" / "x"
    with serve_mirror(tmp_path / "mirror") as endpoint:
        result = CliRunner().invoke(main, ["download", "org/deep-phantom", "--revision", "v1.0.0", "--out", str(out),
                                           "--endpoint", endpoint, "-q"])
    assert "nested more than 16 levels deep" in one_line_error(result)
    assert not out.exists() and not staging_dir(out).exists()


# --- splits ---------------------------------------------------------------------------------


def test_more_folds_than_units_is_an_error_and_folds_are_capped(tmp_path):
    raw = videos(tmp_path / "raw", ["a_1.mp4", "a_2.mp4", "b_1.mp4"])
    result = CliRunner().invoke(main, ["build", str(recipe_file(tmp_path, top={"splits": {"kind": "folds", "k": 4}})),
                                       "--raw", f"clips={raw}", "--out", str(tmp_path / "o"), "--quiet"])
    assert "splits.k is 4, but this build has 3 clips (3 units once clips of one group are kept together)" \
        in one_line_error(result)
    assert not (tmp_path / "o" / LOCK_NAME).exists()
    with pytest.raises(RecipeError, match="splits.k \\(folds\\) must be a whole number from 2 to 100, got 1000000"):
        load_recipe(recipe_file(tmp_path, top={"splits": {"kind": "folds", "k": 1_000_000}}))
    build_release(recipe_file(tmp_path, top={"splits": {"kind": "folds", "k": 3}}), {"clips": raw}, tmp_path / "k3",
                  workers=1, progress=False)
    assert sorted(c.fold for c in open_release(tmp_path / "k3").lock.clips) == [0, 1, 2]


def test_inheriting_the_splits_of_another_recipe_is_a_warning(tmp_path):
    raw = videos(tmp_path / "raw", ["a_1.mp4", "a_2.mp4", "b_1.mp4", "b_2.mp4"])
    first = tmp_path / "first"
    build_release(recipe_file(tmp_path), {"clips": raw}, first, workers=1, progress=False)
    (raw / "b_2.mp4").unlink()
    same = tmp_path / "same"
    build_release(recipe_file(tmp_path), {"clips": raw}, same, workers=1, progress=False, previous=first)
    assert not [w for w in open_release(same).lock.warnings if w.kind == WarningKind.PREVIOUS_OTHER_RECIPE]
    other = tmp_path / "other"
    build_release(recipe_file(tmp_path, "other.yaml", top={"name": "renamed"}), {"clips": raw}, other, workers=1,
                  progress=False, previous=first)
    lock = open_release(other).lock
    (warning,) = [w for w in lock.warnings if w.kind == WarningKind.PREVIOUS_OTHER_RECIPE]
    assert warning.message == ("splits inherited from bounds 0.0.1, a release of another recipe (this is renamed); "
                               "1 clip of it that this build lacks, recorded as removed")
    assert lock.previous.removed == ["clips/b_2.mp4"]


# --- DICOM: views, regions, transfer syntax ---------------------------------------------------


def dicom_recipe(tmp: Path, **source) -> Path:
    spec = {"organ": "heart", "probe": "phased", "input": "dicom", "classes": ["a", "b"], "label": {"constant": "a"},
            "sampling": {"every_n": 2}, "text": "off", "crop": "auto", "ids": "path", **source}
    path = tmp / "dicom.yaml"
    path.write_text(yaml.safe_dump({"name": "scans", "version": "0.0.1", "seed": 1, "sources": {"scans": spec},
                                    "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5}}))
    return path


def test_a_dual_view_kept_whole_only_on_request_and_said_so_per_clip(tmp_path):
    raw = tmp_path / "raw"
    for i in range(2):
        write_phantom_dicom(raw / f"dual{i}.dcm", seed=i, n_frames=4, size=(256, 160), regions="dual", text=None)
    write_phantom_dicom(raw / "single.dcm", seed=5, n_frames=4, regions="single", text=None)
    build_release(dicom_recipe(tmp_path), {"scans": raw}, tmp_path / "largest", workers=1, progress=False)
    warned = [w for w in open_release(tmp_path / "largest").lock.warnings if w.kind == WarningKind.VIEW_LEFT_OUT]
    assert sorted(w.video_id for w in warned) == ["scans/dual0.dcm", "scans/dual1.dcm"]
    assert warned[0].message == ("the file holds 2 views (2D regions); the largest is kept and 1 view left out: "
                                 "the recipe's regions: each makes each view a clip of its own")
    build_release(dicom_recipe(tmp_path, regions="each"), {"scans": raw}, tmp_path / "each", workers=1,
                  progress=False)
    lock = open_release(tmp_path / "each").lock
    assert len(lock.clips) == 5 and not [w for w in lock.warnings if w.kind == WarningKind.VIEW_LEFT_OUT]


def test_regions_inverted_or_beyond_the_frame_are_warnings_and_never_the_crop(tmp_path):
    raw = tmp_path / "raw"
    inside = Region(Box(40, 30, 60, 50), 1, 1, (3, 3), (0.02, 0.02), None)
    beyond = Region(Box(100, 20, 200, 150), 1, 1, (3, 3), (0.02, 0.02), None)  # wider than the 224 x 192 frame
    inverted = Region(Box(150, 20, -100, 150), 1, 1, (3, 3), (0.02, 0.02), None)  # MaxX1 49 < MinX0 150
    write_phantom_dicom(raw / "bad.dcm", seed=1, n_frames=4, regions=[inside, beyond, inverted], text=None)
    info = probe_clip(ClipRef("dicom", (str(raw / "bad.dcm"),)))
    assert [r.box for r in info.regions] == [inside.box] and len(info.region_problems) == 2
    build_release(dicom_recipe(tmp_path), {"scans": raw}, tmp_path / "rel", workers=1, progress=False)
    rel = open_release(tmp_path / "rel")
    messages = [w.message for w in rel.lock.warnings if w.kind == WarningKind.REGION_LEFT_OUT]
    assert messages == [
        "ultrasound region 2 (x 100..299, y 20..169) reaches beyond the 224x192 frame: left out, not used as the crop",
        "ultrasound region 3 (x 150..49, y 20..169) is inverted (a Max before its Min): left out, not used as the crop"]
    (video,) = rel.videos().to_pylist()
    assert video["crop_box"] == [40, 30, 60, 50]


def with_syntax(path: Path, uid: bytes) -> Path:
    """`path` with its file meta Transfer Syntax UID replaced in place (same padded length)."""
    data = path.read_bytes()
    old = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID).encode()
    size = len(old) + len(old) % 2
    at = data.index(old)
    assert len(uid) <= size
    path.write_bytes(data[:at] + uid.ljust(size, b"\0") + data[at + size:])
    return path


@pytest.mark.parametrize("syntax", ["raw-explicit-le", "raw-explicit-be", "rle"])
def test_an_unknown_transfer_syntax_is_named_not_taken_for_missing_pixels(tmp_path, syntax):
    raw = tmp_path / "raw"
    garbage = with_syntax(write_phantom_dicom(raw / "garbage.dcm", seed=1, n_frames=4, transfer_syntax=syntax)[0],
                          b"1.2.3.garbage")
    private = with_syntax(write_phantom_dicom(raw / "private.dcm", seed=2, n_frames=4, transfer_syntax=syntax)[0],
                          b"1.2.840.113619.5.2")
    write_phantom_dicom(raw / "good.dcm", seed=3, n_frames=4, transfer_syntax=syntax)
    build_release(dicom_recipe(tmp_path), {"scans": raw}, tmp_path / "rel", workers=1, progress=False)
    lock = open_release(tmp_path / "rel").lock
    reasons = {f.video_id: (f.stage, f.reason) for f in lock.failures}
    assert reasons == {
        "scans/garbage.dcm": (Stage.PROBE, "unknown transfer syntax (a malformed UID, not quoted): not one the DICOM "
                                           "standard defines, so its pixels cannot be read"),
        "scans/private.dcm": (Stage.PROBE, "unknown transfer syntax 1.2.840.113619.5.2: not one the DICOM standard "
                                           "defines, so its pixels cannot be read")}
    assert not lock.excluded and [c.video_id for c in lock.clips] == ["scans/good.dcm"]
    assert garbage.exists() and private.exists()
