"""The build on phantom clips: labels, splits and groups, determinism, the failure ledger and
warnings, resume, concurrent builds, interruption, verify, audit."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from us4.builder import build_release
from us4.cli import main
from us4.contract.lock import Stage, WarningKind
from us4.errors import BuildError, CacheError, RawFolderError, RecipeError, ReleaseError
from us4.media.gate import OursError
from us4.phantom import write_broken_files, write_phantom_clip
from us4.recipe import load_recipe, parse_recipe
from us4.registry import SOURCES
from us4.release.audit import audit_release
from us4.release.read import open_release
from us4.release.verify import DIFFERS, REPRODUCED, REPRODUCED_PLUS, compare_to_manifest, verify_release

from .conftest import PIPELINES, as_in_a_terminal, flip_byte, wait_for_cached_clips


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a release (hidden work and local folders are not the release's)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        path = Path(f"/proc/{p}/task/{p}/children")
        kids = [int(k) for k in path.read_text().split()] if path.exists() else []
        out += kids
        todo += kids
    return out


def tiny_recipe(tmp: Path, name: str = "tiny.yaml", **overrides) -> Path:
    """A one-source recipe for builds about splits, verify, resume and the ledger; without the text
    check (most of such a build's time; test_text, test_inputs and the US-4 phantom test it)
    unless `sources` is given."""
    raw = {
        "name": "tiny", "version": "0.0.1", "seed": 1,
        "sources": {"butterfly": {"sampling": {"every_n": 4, "max_frames": 6}, "text": "off"}},
        "splits": {"kind": "holdout", "validation": 0.5},
    }
    raw.update(overrides)
    path = tmp / name
    path.write_text(json.dumps(raw))
    return path


def clips(folder: Path, names: list[str], n_frames: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_phantom_clip(folder / name, seed=i, n_frames=n_frames)
    return folder


# --- what a release holds ------------------------------------------------------------


def test_phantom_us4_release_labels_counts_and_layout(phantom_release):
    rel = open_release(phantom_release)
    assert verify_release(rel).ok
    frames = rel.frames().to_pandas()
    videos = rel.videos().to_pandas()
    assert len(videos) == rel.lock.counts.videos == len(rel.lock.clips)
    assert len(frames) == rel.lock.counts.frames == sum(videos["n_kept"])
    assert list(frames["frame_id"]) == list(range(len(frames)))
    assert set(videos["input"]) == {"video", "dicom", "image_sequence"}  # every source in its real raw form
    # the 12-way head of the reference code: every class of every US-4 source is there
    assert set(videos["us4_label"]) == set(range(12))
    for _, v in videos.iterrows():
        assert SOURCES[v["source"]].class_named(v["label"]).us4_head == v["us4_label"]
    # the video table's frame lists point at that video's frames, in order
    for _, v in videos.iterrows():
        rows = frames.set_index("frame_id").loc[list(v["frame_ids"])]
        assert set(rows["video_id"]) == {v["video_id"]}
        assert list(rows["frame_index"]) == list(v["frame_indices"]) == sorted(v["frame_indices"])
    # the images are PNGs of the recorded size, cropped to the recorded box
    first = frames.iloc[0]
    img = Image.open(__import__("io").BytesIO(first["image"]["bytes"]))
    assert img.format == "PNG" and img.size == (first["width"], first["height"])
    assert (first["crop_box"][2], first["crop_box"][3]) == img.size
    assert set(frames["split"]) == {"train", "validation"}
    # shards lie per source and split, so one of each can be fetched alone
    assert {s.path.split("/")[2] for s in rel.lock.shards} == set(rel.lock.recipe.sources)
    # the lock lists every clip with its label, split and the pixel hash of each frame
    by_id = {c.video_id: c for c in rel.lock.clips}
    for _, v in videos.iterrows():
        clip = by_id[v["video_id"]]
        assert (clip.label, clip.split, list(clip.frame_index)) == (v["label"], v["split"], list(v["frame_indices"]))


def test_every_video_in_one_split_and_audit_passes(phantom_pocus_release, tmp_path):
    result = audit_release(open_release(phantom_pocus_release))
    assert result.ok and result.leaks == []
    assert result.videos == open_release(phantom_pocus_release).lock.counts.videos
    # a release whose videos table puts one clip in another split: the audit names it
    leaky = tmp_path / "leaky"
    shutil.copytree(phantom_pocus_release, leaky)
    shard = leaky / "data" / "videos" / "pocus" / "fold1-00000-of-00001.parquet"
    table = pq.read_table(shard)
    moved = table.column("video_id")[0].as_py()
    splits = table.column("split").to_pylist()
    splits[0] = "fold2"
    pq.write_table(table.set_column(table.schema.get_field_index("split"), "split", pa.array(splits, pa.string())),
                   shard)
    result = audit_release(open_release(leaky))
    assert not result.ok and len(result.leaks) == 1 and result.leaks[0].startswith(moved)
    assert CliRunner().invoke(main, ["audit", str(leaky)]).exit_code == 1


def test_copies_of_a_clip_are_grouped_into_one_split(tmp_path):
    """The same bytes under two names are always one unit; a re-encoded copy (other bytes, the
    same scan) is kept with its original where the recipe groups near-duplicates, and without
    that rule the audit finds it across splits and says what to do."""
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"], n_frames=24)
    shutil.copy(raw / "Regphantom_0.mp4", raw / "Regphantom_same_bytes.mp4")
    write_phantom_clip(raw / "Covphantom_reencoded.avi", seed=1, n_frames=24)  # Covphantom_1's scan, another codec
    holdout = {"kind": "holdout", "validation": 0.5}  # two clips a class: one goes to each split unless grouped
    loose = tmp_path / "loose"
    build_release(tiny_recipe(tmp_path, splits=holdout), {"butterfly": raw}, loose, workers=1, progress=False)
    lock = open_release(loose).lock
    split = {c.video_id: c.split for c in lock.clips}
    group = {c.video_id: c.group for c in lock.clips}
    assert split["butterfly/Regphantom_0.mp4"] == split["butterfly/Regphantom_same_bytes.mp4"]
    assert group["butterfly/Regphantom_0.mp4"] == group["butterfly/Regphantom_same_bytes.mp4"] is not None
    assert split["butterfly/Covphantom_1.mp4"] != split["butterfly/Covphantom_reencoded.avi"]
    loose_audit = audit_release(open_release(loose))
    assert loose_audit.ok and not loose_audit.grouped
    assert {p.a[0] for p in loose_audit.near_duplicates} | {p.b[0] for p in loose_audit.near_duplicates} == \
        {"butterfly/Covphantom_1.mp4", "butterfly/Covphantom_reencoded.avi"}
    result = CliRunner().invoke(main, ["audit", str(loose)])
    assert result.exit_code == 0 and "group: near_duplicates" in result.output

    grouped = tmp_path / "grouped"
    summary = build_release(tiny_recipe(tmp_path, "grouped.yaml", splits={**holdout, "group": "near_duplicates"}),
                            {"butterfly": raw}, grouped, workers=1, progress=False)
    rel = open_release(grouped)
    split = {c.video_id: c.split for c in rel.lock.clips}
    assert summary.groups == 2
    assert split["butterfly/Covphantom_1.mp4"] == split["butterfly/Covphantom_reencoded.avi"]
    audit = audit_release(rel)
    assert audit.grouped and audit.ok and audit.near_duplicates == []
    assert "## Groups" in (grouped / "README.md").read_text()
    videos = rel.videos(["video_id", "group"]).to_pylist()
    assert {v["video_id"]: v["group"] for v in videos} == {c.video_id: c.group for c in rel.lock.clips}


def test_thumbnails_are_made_only_for_a_recipe_that_groups_near_duplicates(tmp_path):
    """Nothing but the near-duplicate rule reads a frame's thumbnail: a recipe without it makes
    none, and turning the rule on in a resumed build ingests again and groups as a fresh build."""
    from us4.builder.cache import ClipCache
    from us4.contract.layout import WORK_DIR

    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"], n_frames=24)
    write_phantom_clip(raw / "Covphantom_reencoded.avi", seed=1, n_frames=24)
    (raw / "Cov_bad.mp4").write_text("not a video")  # a failure keeps the cache after the build
    holdout = {"kind": "holdout", "validation": 0.5}
    out = tmp_path / "rel"
    loose = build_release(tiny_recipe(tmp_path, splits=holdout), {"butterfly": raw}, out, workers=1, progress=False)
    cache = ClipCache(out / WORK_DIR)
    keys = [p.name.removesuffix(".pixels.arrow") for p in cache.clips.glob("*.pixels.arrow")]
    assert len(keys) == loose.videos == 3
    assert all(cache.read_pixels(k, "thumb").null_count == len(cache.read_pixels(k, "png")) > 0 for k in keys)

    grouped = build_release(tiny_recipe(tmp_path, "grouped.yaml", splits={**holdout, "group": "near_duplicates"}),
                            {"butterfly": raw}, out, workers=1, progress=False)
    assert grouped.ingested == 4 and grouped.groups == 1
    split = {c.video_id: c.split for c in open_release(out).lock.clips}
    assert split["butterfly/Covphantom_1.mp4"] == split["butterfly/Covphantom_reencoded.avi"]
    thumbs = [cache.read_pixels(k, "thumb") for p in cache.clips.glob("*.pixels.arrow")
              if (k := p.name.removesuffix(".pixels.arrow")) not in keys]
    assert len(thumbs) == 3 and all(t.null_count == 0 and {len(v) for v in t.to_pylist()} == {64 * 64} for t in thumbs)


def test_a_cached_clip_without_the_thumbnails_its_key_asks_for_stops_the_build_naming_its_file(tmp_path, monkeypatch):
    """Grouping never reads a thumbnail that is not there: a cache whose content disagrees with its
    key (us4 never writes one) is named, and the release is not written."""
    from us4.recipe import Recipe

    made = Recipe.clip_params
    monkeypatch.setattr(Recipe, "clip_params", lambda self, *a: {**made(self, *a), "thumbnails": False})
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"], n_frames=24)
    write_phantom_clip(raw / "Covphantom_reencoded.avi", seed=1, n_frames=24)
    recipe = tiny_recipe(tmp_path, splits={"kind": "holdout", "validation": 0.5, "group": "near_duplicates"})
    with pytest.raises(CacheError, match=r"\.pixels\.arrow: cached without the thumbnails its key asks for"):
        build_release(recipe, {"butterfly": raw}, tmp_path / "rel", workers=1, progress=False)
    assert not (tmp_path / "rel" / "release.json").exists()


@pytest.mark.slow
def test_two_builds_byte_identical_whatever_workers_and_creation_order(phantom_us4_raw, phantom_release, tmp_path):
    """A determinism test: a second build of the clips of the session's release (2 workers), copied
    into new folders file by file in reverse order (another creation order), with 1 worker."""
    raw2 = {}
    for name, folder in phantom_us4_raw.items():
        dest = tmp_path / "raw2" / name
        for path in sorted((p for p in folder.rglob("*") if p.is_file()), reverse=True):
            target = dest / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        raw2[name] = dest
    b = build_release("us4", raw2, tmp_path / "b", workers=1, progress=False)
    assert open_release(phantom_release).lock.counts.frames == b.frames > 0
    assert digest(phantom_release) == digest(tmp_path / "b")
    assert not (tmp_path / "b" / ".us4-work").exists()  # no failures: the cache is gone


# --- the failure ledger, warnings, and failures that are ours ------------------------


def test_broken_clips_go_to_the_ledger_and_retry_failed_retries_only_them(tmp_path):
    raw = clips(tmp_path / "raw", [f"Regphantom_{i}.mp4" for i in range(3)], n_frames=24)
    broken = write_broken_files(tmp_path / "broken")
    for kind in ("empty", "not_video", "truncated"):
        shutil.copy(broken[kind], raw / f"Cov_{kind}.mp4")
    (raw / "Xyz_nolabel.mp4").write_bytes((raw / "Regphantom_0.mp4").read_bytes())
    (raw / "notes.txt").write_text("not a clip")
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path)
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out), "-q"])
    assert result.exit_code == 3, result.output
    lock = open_release(out).lock
    ledger = {f.video_id: f for f in lock.failures}
    assert set(ledger) == {f"butterfly/{n}" for n in ("Cov_empty.mp4", "Cov_not_video.mp4", "Cov_truncated.mp4",
                                                      "Xyz_nolabel.mp4")}
    assert "empty" in ledger["butterfly/Cov_empty.mp4"].reason
    assert "unreadable label" in ledger["butterfly/Xyz_nolabel.mp4"].reason
    assert ledger["butterfly/Xyz_nolabel.mp4"].stage == Stage.PLAN
    assert ledger["butterfly/Cov_truncated.mp4"].stage in (Stage.PROBE, Stage.DECODE)
    assert all(str(tmp_path) not in f.reason for f in lock.failures)  # no local path is published
    for video_id in ledger:
        assert video_id in result.output  # each failure named on its own line
    assert "4 clips failed" in result.output
    assert lock.counts.videos == 3
    assert [e.video_id for e in lock.excluded] == ["butterfly/notes.txt"]
    assert verify_release(open_release(out)).ok
    # the broken files are replaced by good clips: only those are ingested again
    for kind in ("empty", "not_video", "truncated"):
        write_phantom_clip(raw / f"Cov_{kind}.mp4", seed=50, n_frames=24)
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False, retry_failed=True)
    assert summary.ingested == 3 and summary.reused == 3
    assert [f.video_id for f in summary.failures] == ["butterfly/Xyz_nolabel.mp4"]
    assert summary.videos == 6


def test_failures_are_kept_without_retry_flag(tmp_path):
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Regphantom_1.mp4"])
    (raw / "Cov_bad.mp4").write_text("not a video")
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path)
    build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    again = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert again.ingested == 0 and [f.video_id for f in again.failures] == ["butterfly/Cov_bad.mp4"]


@pytest.mark.parametrize("where", ["cache", "detector"])
def test_a_failure_that_is_ours_ends_the_build_and_is_never_cached(tmp_path, monkeypatch, where):
    """A full disk while writing the cache, or a bug in us4: the build stops with the
    exception, nothing is recorded as the clip's failure, and the next run retries the clip."""
    import us4.builder.cache as cache
    import us4.builder.ingest as ingest

    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"])
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path)
    if where == "cache":
        def disk_full(path, data):
            raise OSError(28, "No space left on device", str(path))
        monkeypatch.setattr(cache, "atomic_write", disk_full)
        expected = OSError
    else:
        def bug(frames):
            raise ZeroDivisionError("a bug in us4")
        monkeypatch.setattr(ingest, "detect_scan_region", bug)
        expected = OursError  # the gate's one line naming the clip, the bug its cause
    with pytest.raises(expected) as stopped:
        build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    if where == "detector":
        assert isinstance(stopped.value.__cause__, ZeroDivisionError) and "Regphantom_0.mp4" in str(stopped.value)
    work = out / ".us4-work" / "clips"
    assert not list(work.glob("*.fail.json")) and not list(work.glob("*.arrow"))
    assert not (out / "release.json").exists()
    monkeypatch.undo()
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert summary.ingested == 2 and not summary.failures and summary.videos == 2


def test_silent_fallbacks_are_recorded_warnings(tmp_path):
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"])
    # a clip without any scan region (uniform grey): the crop falls back to the full frame
    import numpy as np
    import av

    with av.open(str(raw / "Regflat.avi"), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")))
        c.mux(s.encode())
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {
        "sampling": {"every_n": 4}, "crop": {"mode": "auto", "clips": {"Regnot_there.mp4": [0, 0, 10, 10]}}}})
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    kinds = {(w.kind, w.video_id) for w in open_release(out).lock.warnings}
    assert (WarningKind.CROP_FALLBACK, "butterfly/Regflat.avi") in kinds
    assert any(k == WarningKind.UNKNOWN_CLIP for k, _ in kinds)
    assert "warning: butterfly/Regflat.avi: crop_fallback" in result.output
    assert "2 warnings" in result.output


def test_a_library_upgrade_re_ingests_instead_of_mixing_encoders(tmp_path, monkeypatch):
    import us4.builder.plan as plan

    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4", "Covphantom_1.mp4"])
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path)
    (raw / "Cov_bad.mp4").write_text("not a video")  # keeps the cache after the build
    build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False).ingested == 0
    upgraded = {**plan.byte_libraries(), "pillow": "99.0.0"}
    monkeypatch.setattr(plan, "byte_libraries", lambda text=True: upgraded)
    assert build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False).ingested == 3


# --- resume, interruption, concurrency ----------------------------------------------


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_bytes(phantom_us4_raw, phantom_release, tmp_path):
    args = [sys.executable, "-m", "us4.cli", "build", "us4", "--workers", "1", "-q"]
    for name, folder in phantom_us4_raw.items():
        args += ["--raw", f"{name}={folder}"]
    ref = phantom_release  # the same clips and recipe, built whole
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_cached_clips(out, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = wait_for_cached_clips(out, 0)
    assert 3 <= done < open_release(ref).lock.counts.videos
    assert not (out / "release.json").exists()
    resumed = subprocess.run(args + ["--out", str(out)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} reused" in resumed.stdout
    assert digest(out) == digest(ref)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_within_a_second(tmp_path):
    """SIGINT to the build's process group (what a terminal's Ctrl-C sends), 2 workers."""
    raw = clips(tmp_path / "raw", [f"Regphantom_{i:02d}.mp4" for i in range(12)], n_frames=96)
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 1}}})
    out = tmp_path / "rel"
    proc = subprocess.Popen([sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={raw}",
                             "--out", str(out), "--workers", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_in_a_terminal)
    wait_for_cached_clips(out, 1)
    workers = descendants(proc.pid)  # the workers (forked by a fork server the build started)
    assert len(workers) >= 2
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    stopped = time.monotonic() - start
    assert stopped < 1.5, f"the build took {stopped:.2f} s to stop"
    def alive(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        return status.exists() and "zombie" not in status.read_text()

    deadline = time.monotonic() + 1.0  # the fork server and resource tracker follow the driver out
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "processes of the build outlived it"
    assert "run the same command again to resume" in proc.stderr.read()
    done = wait_for_cached_clips(out, 0)
    assert done < 12 and not list((out / ".us4-work" / "clips").glob(".*.tmp"))
    resumed = build_release(recipe, {"butterfly": raw}, out, workers=2, progress=False)
    assert resumed.reused == done and resumed.videos == 12


@pytest.mark.slow
def test_two_builds_into_one_folder_never_interleave(tmp_path):
    raw = clips(tmp_path / "raw", [f"Regphantom_{i:02d}.mp4" for i in range(6)], n_frames=96)
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 1}}})
    out = tmp_path / "rel"
    args = [sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out),
            "--workers", "1", "-q"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_cached_clips(out, 1)
    second = subprocess.run(args, capture_output=True, text=True)
    assert second.returncode == 1
    assert "another us4 build" in second.stderr and "Traceback" not in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert verify_release(open_release(out)).ok
    # once the first is done, the folder is free again
    assert subprocess.run(args, capture_output=True, text=True).returncode == 0


def test_interrupted_install_leaves_no_lock_and_is_redone(phantom_pocus_release, phantom_pocus_raw, tmp_path,
                                                          monkeypatch):
    import us4.builder.run as run

    out = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, out)  # a finished release, rebuilt in place
    install = run._install

    def killed_midway(staging: Path, target: Path, files: list[str]) -> None:
        replace = os.replace

        def interrupted(src, dst):  # after the old lock is gone, before the new release is in
            if not (target / "release.json").exists():
                raise KeyboardInterrupt
            replace(src, dst)

        monkeypatch.setattr(os, "replace", interrupted)
        try:
            install(staging, target, files)
        finally:
            monkeypatch.setattr(os, "replace", replace)

    monkeypatch.setattr(run, "_install", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        build_release("pocus", {"pocus": phantom_pocus_raw}, out, workers=1, progress=False)
    with pytest.raises(ReleaseError, match="release.json: missing"):
        open_release(out)  # no lock: nobody takes the half-installed folder for a release
    monkeypatch.setattr(run, "_install", install)
    again = build_release("pocus", {"pocus": phantom_pocus_raw}, out, workers=1, progress=False)
    assert again.ingested == 0 and again.reused == again.videos + len(again.failures)
    assert digest(out) == digest(phantom_pocus_release)


# --- verify, and verify against a manifest -------------------------------------------


def test_tampered_files_are_named_by_verify(phantom_pocus_release, tmp_path):
    out = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, out)
    shard = sorted((out / "data" / "frames" / "pocus").glob("*.parquet"))[0]
    flip_byte(shard)
    card = out / "README.md"
    card.write_text(card.read_text() + "\nhand edit\n")
    (out / "data" / "frames" / "pocus" / "extra.parquet").write_bytes(b"x")
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert shard.name in result.output and "modified" in result.output
    assert "README.md" in result.output and "extra.parquet" in result.output
    truncated = sorted((out / "data" / "videos" / "pocus").glob("*.parquet"))[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert any(truncated.name in p and "truncated" in p for p in verify_release(open_release(out)).problems)


def test_verify_against_a_manifest_leads_with_one_verdict(tmp_path):
    """The manifest's clips rebuilt among added ones: 'reproduced plus additions' when the
    splits are kept (--previous), 'differs' naming the moved clips when they are not."""
    names = [f"{p}phantom_{i}.mp4" for p in ("Reg", "Cov") for i in range(4)]
    raw = clips(tmp_path / "raw", names)
    recipe = tiny_recipe(tmp_path, splits={"kind": "folds", "k": 2})
    published = tmp_path / "published"
    build_release(recipe, {"butterfly": raw}, published, workers=1, progress=False)
    manifest = tmp_path / "manifest.json"
    shutil.copy(published / "release.json", manifest)
    same = CliRunner().invoke(main, ["verify", str(published), "--manifest", str(manifest)])
    assert same.exit_code == 0 and same.output.count("verdict: reproduced: byte-identical") == 1

    bigger = tmp_path / "bigger"
    shutil.copytree(raw, bigger)
    for i, name in enumerate(["Regphantom_new_a.mp4", "Covphantom_new_b.mp4", "Covphantom_new_c.mp4"]):
        write_phantom_clip(bigger / name, seed=100 + i, n_frames=16)
    (bigger / "Cov_not_a_video.mp4").write_text("junk")
    kept = tmp_path / "kept"
    build_release(recipe, {"butterfly": bigger}, kept, workers=1, progress=False, previous=manifest)
    result = CliRunner().invoke(main, ["verify", str(kept), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    verdict = next(line for line in lines if line.startswith("verdict:"))
    assert verdict.startswith(f"verdict: {REPRODUCED_PLUS}: every one of the manifest's 8 clips")
    assert "  clips added: 3" in lines and "  clips that moved split: 0" in lines
    assert "  frames with other pixels: 0" in lines and "  new files that failed here: 1" in lines
    assert "built in the manifest, failed here" not in result.output
    assert "butterfly/Cov_not_a_video.mp4: failed here (not in the manifest)" in result.output

    fresh = tmp_path / "fresh"
    build_release(recipe, {"butterfly": bigger}, fresh, workers=1, progress=False)
    report = compare_to_manifest(open_release(fresh).lock, open_release(published).lock)
    assert report.verdict == DIFFERS and len(report.diff.clips_added) == 3
    assert report.diff.moved and not report.diff.pixels and not report.diff.clips_removed
    assert "--previous" in report.lines()[0]


def test_verify_separates_bytes_from_environment(phantom_pocus_release):
    lock = open_release(phantom_pocus_release).lock
    other_host = lock.model_copy(update={"environment": lock.environment.model_copy(
        update={"host": {**lock.environment.host, "python": "3.99.0", "platform": "plan9-mips"}})})
    report = compare_to_manifest(lock, other_host)
    assert report.verdict == REPRODUCED
    assert any("python" in e for e in report.environment)
    clip = lock.clips[0]
    changed = clip.model_copy(update={"frame_sha256": ["0" * 64] + clip.frame_sha256[1:]})
    other_pixels = lock.model_copy(update={"clips": [changed, *lock.clips[1:]]})
    report = compare_to_manifest(lock, other_pixels)
    assert report.verdict == DIFFERS and report.diff.pixels == [(clip.video_id, 1, len(clip.frame_index))]


# --- splits that stay put across versions --------------------------------------------


def test_previous_keeps_every_split_and_diff_shows_no_moves(tmp_path):
    names = [f"{p}phantom_{i}.mp4" for p in ("Reg", "Cov") for i in range(5)]
    raw = clips(tmp_path / "raw", names)
    recipe = tiny_recipe(tmp_path, splits={"kind": "folds", "k": 3})
    v1 = tmp_path / "v1"
    build_release(recipe, {"butterfly": raw}, v1, workers=1, progress=False)
    (raw / "Regphantom_0.mp4").unlink()  # removed in the next version
    for i in range(4):
        write_phantom_clip(raw / f"Covphantom_new_{i}.mp4", seed=200 + i, n_frames=16)
    v2 = tmp_path / "v2"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(v2),
                                       "--previous", str(v1)])
    assert result.exit_code == 0, result.output
    old = {c.video_id: c.split for c in open_release(v1).lock.clips}
    new = {c.video_id: c.split for c in open_release(v2).lock.clips}
    assert {v: new[v] for v in old if v in new} == {v: old[v] for v in old if v in new}
    lock = open_release(v2).lock
    assert lock.previous.name == "tiny" and lock.previous.lock_sha256 == open_release(v1).lock.sha256
    assert lock.previous.removed == ["butterfly/Regphantom_0.mp4"]  # removed clips are reported
    assert "1 clip of the previous release is gone: butterfly/Regphantom_0.mp4" in result.output
    # the new clips went where their class was least represented: the folds stay balanced
    counts = {f"fold{k}": sum(1 for v, s in new.items() if s == f"fold{k}" and "/Cov" in v) for k in range(3)}
    assert max(counts.values()) - min(counts.values()) <= 1
    diff = CliRunner().invoke(main, ["diff", str(v1), str(v2)])
    assert diff.exit_code == 0
    assert "clips that moved between splits: 0" in diff.output
    assert "- butterfly/Regphantom_0.mp4" in diff.output and "clips: 4 added, 1 removed" in diff.output


def test_diff_takes_a_manifest_on_either_side(phantom_pocus_release, tmp_path):
    manifest = tmp_path / "m.json"
    shutil.copy(phantom_pocus_release / "release.json", manifest)
    for a, b in ((str(manifest), str(phantom_pocus_release)), (str(phantom_pocus_release), str(manifest))):
        result = CliRunner().invoke(main, ["diff", a, b])
        assert result.exit_code == 0, result.output
        assert "no differences" in result.output
    shipped = CliRunner().invoke(main, ["diff", "pocus-1.0.0", str(manifest)])  # a manifest us4 ships, by name
    rel = open_release(phantom_pocus_release)
    assert shipped.exit_code == 0 and f"pocus 1.0.0 -> {rel.name} {rel.version}" in shipped.output


# --- bad invocations and recipes -------------------------------------------------------


def test_clear_errors_for_bad_invocations(tmp_path, phantom_pocus_raw):
    runner = CliRunner()
    recipe = tiny_recipe(tmp_path)
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4"])
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={tmp_path / 'nope'}", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "butterfly" in r.output and "no such folder" in r.output
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--raw", f"clsut={tmp_path}",
                             "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no source 'clsut'" in r.output and "butterfly" in r.output
    r = runner.invoke(main, ["build", "us4", "--raw", f"butterfly={raw}", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "--raw clust=DIR" in r.output
    r = runner.invoke(main, ["build", str(recipe), "--raw", "clust", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "SOURCE=DIR" in r.output
    r = runner.invoke(main, ["build", "no-such-recipe", "--raw", f"butterfly={raw}", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "recipe us4 ships" in r.output and "pocus" in r.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(busy)])
    assert r.exit_code == 1 and "not empty" in r.output and (busy / "thesis.tex").read_text() == "precious"
    built = tmp_path / "built"  # a release folder is replaced whole on a rebuild: not with a file of yours in it
    assert runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(built), "-q"]).exit_code == 0
    (built / "data" / "notes.md").write_text("precious")
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(built), "-q"])
    assert r.exit_code == 1 and "1 file its lock does not name (first: data/notes.md)" in r.output
    assert (built / "data" / "notes.md").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={empty}", "--out", str(tmp_path / "never")])
    assert r.exit_code == 1 and "no clips found" in r.output and not (tmp_path / "never").exists()
    r = runner.invoke(main, ["verify", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such release folder" in r.output


def test_an_empty_source_is_an_error_unless_allowed(tmp_path):
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 4}},
                                            "clust": {"input": "video", "sampling": {"every_n": 4}}})
    good = clips(tmp_path / "butterfly", ["Regphantom_0.mp4", "Covphantom_1.mp4"])
    empty = tmp_path / "clust"
    empty.mkdir()
    (empty / "README.txt").write_text("no clips here")
    runner = CliRunner()
    out = tmp_path / "rel"
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={good}", "--raw", f"clust={empty}",
                             "--out", str(out)])
    assert r.exit_code == 1 and "--allow-empty clust" in r.output and not (out / "release.json").exists()
    # a folder whose only clips all fail is as empty
    shutil.copy(write_broken_files(tmp_path / "broken")["not_video"], empty / "Rb1_bad.mp4")
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={good}", "--raw", f"clust={empty}",
                             "--out", str(out)])
    assert r.exit_code == 1 and "no usable clip" in r.output and "--allow-empty clust" in r.output
    r = runner.invoke(main, ["build", str(recipe), "--raw", f"butterfly={good}", "--raw", f"clust={empty}",
                             "--out", str(out), "--allow-empty", "clust"])
    assert r.exit_code == 3, r.output  # built; the clust clip failed
    lock = open_release(out).lock
    assert [w.kind for w in lock.warnings] == [WarningKind.EMPTY_SOURCE]
    stats = runner.invoke(main, ["stats", str(out)])
    row = next(line for line in stats.output.splitlines() if line.split()[:1] == ["clust"])
    assert row.split()[1:3] == ["0", "0"]  # every recipe source is shown, 0 where empty


@pytest.mark.parametrize("raw, message", [
    ({"name": "x", "version": "1", "sources": {"nope": {"sampling": {"every_n": 2}}}}, "unknown source 'nope'"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2, "evenly": 3}}}}, "sampling"),
    ({"name": "x", "version": "1", "sources": {"clust": {}}}, "needs a 'sampling' policy"),
    ({"name": "x", "version": "1", "sources": {"clust": {"fps": 5, "sampling": {"every_n": 2}, "classes": ["f9"]}}},
     "unknown classes"),
    ({"name": "x", "version": "1", "sources": {"clust": {"fps": 5, "sampling": {"every_n": 2},
                                                           "crop": {"box": [0, 0, -1, 5]}}}}, "crop box"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2}}}}, "fps: N"),
    ({"name": "x", "sources": {}}, "missing required key 'version'"),
    ({"name": "x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2}}},
      "splits": {"kind": "folds", "k": 1}}, "splits.k"),
    ({"name": "x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2},
                                                              "crop": {"clips": {"../../etc/x.mp4": [0, 0, 4, 4]}}}}},
     "inside its folder"),
    ({"name": "x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2},
                                                              "label": {"sheet": "/etc/passwd", "column": "c"}}}},
     "inside its folder"),
    ({"name": "../x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2}}}}, "name '../x'"),
    ({"name": "x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2}, "organ": "heart"}}},
     "in the registry"),
    ({"name": "x", "version": "1", "sources": {"scans": {"sampling": {"every_n": 2}, "organ": "heart"}}},
     "needs classes, label"),
])
def test_recipe_errors_are_specific(raw, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw)


def test_recipe_hash_is_stable_and_sensitive_and_states_every_default():
    a, b = load_recipe(PIPELINES / "pocus.yaml"), load_recipe("pocus")
    assert a.sha256 == b.sha256
    spec = a.to_dict()["sources"]["pocus"]
    assert (spec["input"], spec["ids"], spec["text"]) == ("video", "path", "off")  # as pocus.yaml says
    assert parse_recipe({"name": "x", "version": "1", "sources": {"butterfly": {"sampling": {"every_n": 2}}}}
                        ).to_dict()["sources"]["butterfly"]["text"] == "warn"  # the default for video
    assert parse_recipe(a.to_dict()).sha256 == a.sha256
    raw = a.to_dict()
    raw["dedup"]["threshold"] = 2.0
    assert parse_recipe(raw).sha256 != a.sha256
    us4 = load_recipe("us4").to_dict()["sources"]
    assert us4["clust"]["input"] == "image_sequence" and us4["liver_fibrosis"]["ids"] == "hash"
    assert us4["covid19_lusms"]["text"] == "mask"


def test_crop_override_per_clip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_phantom_clip(raw / "Regphantom_0.mp4", seed=0, n_frames=16)
    write_phantom_clip(raw / "Covphantom_0.avi", seed=1, n_frames=16)
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {
        "sampling": {"every_n": 4}, "crop": {"mode": "auto", "clips": {"Regphantom_0.mp4": [10, 20, 64, 48]}}}})
    out = tmp_path / "rel"
    build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    videos = open_release(out).videos().to_pandas().set_index("path")
    assert list(videos.loc["Regphantom_0.mp4", "crop_box"]) == [10, 20, 64, 48]
    assert list(videos.loc["Covphantom_0.avi", "crop_box"]) != [10, 20, 64, 48]


def test_pocus_layout_sheet_labels_exclusions_and_folds(phantom_pocus_release):
    rel = open_release(phantom_pocus_release)
    videos = rel.videos().to_pandas()
    assert set(videos["probe"]) == {"convex"} and "viral" not in set(videos["label"])
    reasons = {e.video_id: e.reason for e in rel.lock.excluded}
    assert any("linear" in p for p in reasons) and any(p.split("/")[-1].startswith("Vir") for p in reasons)
    assert rel.lock.sheet.missing == ["Cov_phantom_not_shipped (covid, convex)"]
    assert sorted(set(videos["fold"])) == [0, 1, 2, 3, 4]
    assert set(videos["split"]) == {f"fold{i}" for i in range(5)}
    frames = rel.frames(["video_id", "fold"]).to_pandas()
    assert (frames.groupby("video_id")["fold"].nunique() == 1).all()
    # stratified: each class spread over the folds
    for _, group in videos.groupby("label"):
        assert group["fold"].value_counts().max() - group["fold"].value_counts().min() <= 1
    assert set(videos["licence"]) == {"CC BY 4.0"}
    assert rel.lock.phantom and rel.name == "pocus-phantom" and rel.version == f"{load_recipe('pocus').version}-phantom"


def test_sheet_label_wins_and_the_notes_are_one_line_each(phantom_pocus_raw, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_pocus_raw, data)
    sheet = data / "dataset_metadata.csv"
    text = sheet.read_text().replace("Cov_phantom_00,COVID-19", "Cov_phantom_00,regular")
    sheet.write_text(text.replace("\n", "\n", 1))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", "pocus", "--raw", f"pocus={data}", "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert sum("metadata-sheet row name" in n for n in notes) == 1
    assert "1 metadata-sheet row names a clip that is not in this folder" in result.output
    assert "release.json: sheet.missing" in result.output
    assert "note: 1 clip labelled by the metadata sheet over its file name" in result.output
    assert not re.search(r"\b1 (clips|files|rows|warnings|videos|groups)\b", result.output)  # plurals
    videos = open_release(out).videos().to_pandas().set_index("path")
    row = videos[videos.index.str.contains("Cov_phantom_00")].iloc[0]
    assert row["label"] == "regular"


def test_stats_prints_counts_and_spreads(phantom_release):
    result = CliRunner().invoke(main, ["stats", str(phantom_release)])
    assert result.exit_code == 0
    assert "butterfly" in result.output and "frames kept per clip" in result.output
    assert "frame rate (fps)" in result.output
    # each source's counts beside the paper's, read from the registry
    line = next(row for row in result.output.splitlines() if row.split()[:1] == ["liver_fibrosis"]
                and "11714" in row)
    assert line.split()[-2:] == ["296", "11714"]


def test_sources_lists_the_registry():
    result = CliRunner().invoke(main, ["sources"])
    assert result.exit_code == 0
    for name, source in SOURCES.items():
        assert name in result.output and source.organ in result.output
    assert "1533" in result.output and "11714" in result.output


def test_concurrent_build_lock_is_released_by_a_killed_build(tmp_path):
    """A build killed by SIGKILL holds no lock: the kernel drops it with the process."""
    from us4.builder.mutex import BuildMutex

    work = tmp_path / "rel" / ".us4-work"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from us4.builder.mutex import BuildMutex\n"
        f"m = BuildMutex(Path({str(work)!r}), Path('x')).__enter__(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(BuildError, match=f"process {child.pid}"):
        BuildMutex(work, tmp_path / "rel").__enter__()
    child.kill()
    child.wait()
    with BuildMutex(work, tmp_path / "rel"):
        pass


def test_raw_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(RawFolderError, match="no such folder"):
        build_release(tiny_recipe(tmp_path), {"butterfly": tmp_path / "nope"}, tmp_path / "o", progress=False)


def test_a_missing_metadata_sheet_is_a_recorded_warning(phantom_pocus_raw, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_pocus_raw, data)
    (data / "dataset_metadata.csv").unlink()
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", "pocus", "--raw", f"pocus={data}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [w for w in open_release(out).lock.warnings if w.kind == WarningKind.SHEET_MISSING]
    assert len(warnings) == 1 and "labels come from file names alone" in warnings[0].message
    assert "warning: pocus: sheet_missing" in result.output
    assert "sheet_missing" in (out / "README.md").read_text()


def test_an_io_error_of_the_machine_is_never_the_clips_failure(tmp_path, monkeypatch):
    """EIO while decoding (a flaky shared filesystem) ends the build and is retried next run."""
    import errno
    import importlib

    import av

    decode = importlib.import_module("us4.media.decode")  # the module (us4.media.decode is also a function)
    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4"])

    def flaky(*args, **kwargs):
        raise av.error.OSError(errno.EIO, "Input/output error")
        yield  # a generator, as the real one

    monkeypatch.setattr(decode, "_iter_frames", flaky)
    out = tmp_path / "rel"
    with pytest.raises(OSError):
        build_release(tiny_recipe(tmp_path), {"butterfly": raw}, out, workers=1, progress=False)
    assert not list((out / ".us4-work" / "clips").glob("*.fail.json"))
    monkeypatch.undo()
    assert build_release(tiny_recipe(tmp_path), {"butterfly": raw}, out, workers=1, progress=False).videos == 1


def test_a_video_whose_frame_size_changes_is_a_ledger_entry(tmp_path):
    import av
    import numpy as np

    raw = clips(tmp_path / "raw", ["Regphantom_0.mp4"])
    with av.open(str(raw / "Covresized.mpeg"), "w") as c:
        s = c.add_stream("mpeg2video", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")))
        c.mux(s.encode())
    second = tmp_path / "second.mpeg"
    with av.open(str(second), "w") as c:
        s = c.add_stream("mpeg2video", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((64, 96, 3), 30 * i, np.uint8), format="rgb24")))
        c.mux(s.encode())
    with open(raw / "Covresized.mpeg", "ab") as f:  # MPEG-2 elementary streams concatenate
        f.write(second.read_bytes())
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 1}, "crop": "none"}})
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert [f.video_id for f in summary.failures] == ["butterfly/Covresized.mpeg"]
    assert "frame size changes" in summary.failures[0].reason
