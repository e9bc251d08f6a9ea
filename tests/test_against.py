"""Issue 15, part 3: pretraining and evaluation releases are disjoint, and proven so.

`us4 audit RELEASE --against OTHER` finds frames of one release identical to, or near-duplicates
of, frames of another; `us4 benchmark` runs it between --pretrain and --eval and records it;
the semi-supervised term uses the pretraining release's own classes and the record names the
loss actually used; benchmark.json and the card give the evaluation folds' class counts.
"""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import av
import pytest
import yaml
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.media.phantom import write_phantom_clip
from us4.release.audit import audit_against
from us4.release.read import open_release


def recipe(tmp: Path, name: str, classes: list[str], **source) -> Path:
    """A recipe declaring one video source `name`, labelled by file-name prefix."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": classes, "label": {"prefix": True},
            "sampling": {"every_n": 5}, "crop": "auto", "text": "off", **source}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "version": "1.0.0", "description": name, "seed": 1,
                                    "sources": {name: spec}, "dedup": {"threshold": 0},
                                    "splits": {"kind": "holdout", "validation": 0.34}}))
    return path


def build(tmp: Path, name: str, classes: list[str], raw: Path, **source) -> Path:
    build_release(recipe(tmp, name, classes, **source), {name: raw}, tmp / name, workers=1, progress=False)
    return tmp / name


def reencode_cropped(src: Path, dst: Path, border: int) -> None:
    """Decode a clip, cut `border` pixels off each side, encode it again with another codec (MPEG-4 part 2:
    lossy, so every pixel differs a little from the H.264 original)."""
    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="rgb24")[border:-border, border:-border] for f in inp.decode(video=0)]
    h, w = frames[0].shape[:2]
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.bit_rate = 4_000_000  # FFmpeg's default (200 kb/s) smears the scan's edges
        for arr in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    """A: four phantom clips. B: two other clips, a byte copy of A's Cov_a and A's Reg_b re-encoded
    and cropped. C: three other clips only."""
    tmp = tmp_path_factory.mktemp("against")
    for i, name in enumerate(["Cov_a.mp4", "Cov_b.mp4", "Reg_a.mp4", "Reg_b.mp4"]):
        write_phantom_clip(tmp / "raw_a" / name, seed=i, n_frames=30, size=(128, 112))
    for i, name in enumerate(["Cov_x.mp4", "Reg_x.mp4"]):
        write_phantom_clip(tmp / "raw_b" / name, seed=20 + i, n_frames=30, size=(128, 112))
    shutil.copy(tmp / "raw_a" / "Cov_a.mp4", tmp / "raw_b" / "Cov_copy.mp4")
    reencode_cropped(tmp / "raw_a" / "Reg_b.mp4", tmp / "raw_b" / "Reg_recut.avi", border=1)
    for i, name in enumerate(["Cov_y.mp4", "Cov_z.mp4", "Reg_y.mp4"]):
        write_phantom_clip(tmp / "raw_c" / name, seed=40 + i, n_frames=30, size=(128, 112))
    return {n: build(tmp, n, ["cov", "reg"], tmp / f"raw_{n.lower()}") for n in ("A", "B", "C")}


def test_audit_against_finds_a_copied_clip_and_a_reencoded_cropped_one(releases):
    """A byte copy of a clip gives identical frames; the same clip cut by 1 px on each side and re-encoded
    with another codec gives near-duplicates (the within-release measure, confirmed on pixels);
    nothing else pairs. The command lists each pair (video, frame, split of each side, distance,
    difference) and exits 1."""
    a, b = open_release(releases["A"]), open_release(releases["B"])
    result = audit_against(a, b, keep=1000)
    pairs = collections.Counter((p.a[0], p.b[0]) for p in result.pairs)
    assert set(pairs) == {("A/Cov_a.mp4", "B/Cov_copy.mp4"), ("A/Reg_b.mp4", "B/Reg_recut.avi")}, pairs
    frames_a = a.frames(["video_id", "frame_index"]).to_pylist()
    kept = sum(1 for r in frames_a if r["video_id"] == "A/Cov_a.mp4")
    copied = [p for p in result.pairs if p.b[0] == "B/Cov_copy.mp4"]
    # every kept frame of the copied clip meets its twin, identical (and maybe a close neighbour)
    assert {(p.a[1], p.b[1]) for p in copied if p.distance == 0 and p.difference == 0} == \
        {(r["frame_index"], r["frame_index"]) for r in frames_a if r["video_id"] == "A/Cov_a.mp4"}
    assert result.identical == kept and result.found == len(result.pairs)
    recut = [p for p in result.pairs if p.b[0] == "B/Reg_recut.avi"]
    assert recut and all(p.difference > 0 for p in recut) and all(p.difference <= 4.0 for p in recut)
    assert result.shared_videos == (2, 2)
    assert result.compared == result.frames[0] * result.frames[1] and result.candidates >= result.found

    out = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["B"]), "--limit", "3"])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    first = result.pairs[0]
    assert lines[0] == (f"  bits={first.distance:2d} diff={first.difference:5.2f}  {first.a[0]}#{first.a[1]} "
                        f"[{first.a[2]}]  ~  {first.b[0]}#{first.b[1]} [{first.b[2]}]")
    assert lines[3] == f"  ... and {result.found - 3} more (--limit)"
    assert (f"{result.found} near-duplicate frame pairs across the releases ({kept} identical): "
            f"{result.compared:,} frame pairs compared by hash") in out.output
    assert lines[-1] == ("2 videos of A share frames with 2 videos of B: training on one and evaluating on the "
                         "other is not leak-free")


def test_audit_against_disjoint_releases_finds_nothing_and_exits_0(releases):
    out = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["C"])])
    assert out.exit_code == 0, out.output
    a, c = (open_release(releases[n]) for n in "AC")
    n_a, n_c = (sum(s.rows for s in r.shards("frames")) for r in (a, c))
    assert out.output.splitlines()[-1].startswith(
        f"0 near-duplicate frame pairs across the releases (0 identical): {n_a * n_c:,} frame pairs compared by hash")
    refused = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["C"]), "--text"])
    assert refused.exit_code == 2 and "--against compares two releases' frames" in refused.output
