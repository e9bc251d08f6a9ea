"""The POCUS recipe on the real sample at ../shared/pocus (skipped with a message where absent)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
import pytest

from us4.builder import build_release
from us4.cli import main
from us4.recipe import load_recipe
from us4.registry import SOURCES
from us4.release.audit import audit_release
from us4.release.read import open_release, read_lock_ref
from us4.release.verify import REPRODUCED, REPRODUCED_PLUS, compare_to_manifest, verify_release

from .conftest import REPO, as_in_a_terminal, flip_byte, wait_for_cached_clips
from .test_build import digest

pytestmark = pytest.mark.slow  # end-to-end (real POCUS builds): python -m pytest -m slow

MANIFEST = REPO / "manifests" / f"pocus-{load_recipe('pocus').version}.json"


def test_every_real_clip_probes(pocus_data):
    result = CliRunner().invoke(main, ["probe", str(pocus_data / "pocus_videos")])
    assert result.exit_code == 0, result.output
    clips = [p for p in (pocus_data / "pocus_videos").rglob("*") if p.is_file()]
    for clip in clips:
        assert clip.name in result.output


def test_pocus_release_follows_the_pocovid_convention(pocus_release, pocus_data):
    rel = open_release(pocus_release)
    assert verify_release(rel).ok
    videos = rel.videos().to_pandas()
    frames = rel.frames(["video_id", "fold", "split", "label"]).to_pandas()
    convex = [p for p in (pocus_data / "pocus_videos" / "convex").iterdir()
              if not p.name.lower().startswith("vir")]
    assert len(videos) == len(convex) and not rel.lock.failures
    assert set(videos["probe"]) == {"convex"}
    assert set(videos["label"]) == {"covid", "pneumonia", "regular"}
    assert videos["n_kept"].max() <= 30
    # every int(fps/3)-th frame
    for _, v in videos.iterrows():
        step = max(1, int(v["fps"] / 3))
        assert all(i % step == 0 for i in v["frame_indices"]), v["video_id"]
    # labels agree with the metadata sheet (which wins over file names)
    sheet = pd.read_csv(pocus_data / "dataset_metadata.csv", dtype=str).set_index("Filename")
    pocus = SOURCES["pocus"]
    for _, v in videos.iterrows():
        stem = Path(v["path"]).stem
        assert pocus.class_of_sheet(sheet.loc[stem, "Label"]).name == v["label"], stem
    # whole videos per fold, five folds, each class in several folds
    assert (frames.groupby("video_id")["fold"].nunique() == 1).all()
    assert sorted(frames["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (videos.groupby("label")["fold"].nunique() >= 4).all()
    # the sheet's rows for videos absent from the sample are reported, not fatal
    assert len(rel.lock.sheet.missing) > 0


def test_groups_keep_one_scan_and_one_patient_in_one_fold(pocus_release):
    rel = open_release(pocus_release)
    groups: dict[str, set[str]] = {}
    for clip in rel.lock.clips:
        if clip.group:
            groups.setdefault(clip.group, set()).add(clip.split)
    assert len(groups) >= 5 and all(len(s) == 1 for s in groups.values())
    # two crops of one video (a near-duplicate pair the sheet does not reveal) are one group
    by_id = {c.video_id: c.group for c in rel.lock.clips}
    assert by_id["pocus/convex/Pneu_Basal-pneumonia-RUQ_crop.mp4"] == \
        by_id["pocus/convex/Pneu_basalpneumonia_liftle_case1.mp4"] is not None
    audit = audit_release(rel)
    assert audit.grouped and audit.ok and audit.near_duplicates == []
    # the other clips kept the fold they had in 1.1.0, but for those the balance by class moved, each named
    old = {c.video_id: c.split for c in read_lock_ref("pocus-1.1.0")[0].clips}
    moved = {c.video_id for c in rel.lock.clips if old.get(c.video_id) not in (None, c.split)}
    assert moved == {w.video_id for w in rel.lock.warnings if w.kind == "split_moved"}
    assert rel.lock.previous.version == "1.1.0"


def test_rebuild_reproduces_the_published_manifest_pixel_for_pixel(pocus_release):
    """The session's build is a rebuild of the published release, made elsewhere: every frame's pixels,
    label and split are the manifest's (a second build here to compare with this one would add
    nothing; 1 and 2 workers give the same bytes in test_build, and the resumed build below gives
    this one's). Its frames shards differ in bytes alone: Pillow encoded the manifest's PNGs, us4's
    own encoder these; the videos shards are byte-identical."""
    report = compare_to_manifest(open_release(pocus_release).lock, read_lock_ref(MANIFEST)[0])
    assert report.verdict == REPRODUCED, report.lines()
    assert report.shards and all(s.startswith("data/frames/") for s in report.shards)
    result = CliRunner().invoke(main, ["verify", str(pocus_release), "--manifest", str(MANIFEST)])
    assert result.exit_code == 0
    assert ("verdict: reproduced: every one of the manifest's 61 clips and 1095 frames is here with identical "
            "pixels, labels and splits; 5 shards differ in bytes alone") in result.output
    assert "  frames with other pixels: 0" in result.output


def test_a_superset_is_reported_as_reproduced_plus_additions(pocus_data, tmp_path):
    """The manifest's clips among copies of a few clips under new names and a file that is not
    a video (what a build from the full repository looks like), built with --previous MANIFEST."""
    data = tmp_path / "data"
    shutil.copytree(pocus_data, data, symlinks=True)
    convex = data / "pocus_videos" / "convex"
    for name in ("Cov-Atlas+(44).gif", "Reg-NormalLungs.mp4"):
        shutil.copy(convex / name, convex / f"{name[:3]}_copy_{name}")
    (convex / "Cov_not_a_video.mp4").write_text("this is not a video")
    out = tmp_path / "rel"  # the manifest's folds kept (added clips can change how the recipe's would balance)
    build_release("pocus", {"pocus": data}, out, workers=2, progress=False, previous=MANIFEST)
    result = CliRunner().invoke(main, ["verify", str(out), "--manifest", str(MANIFEST)])
    assert result.exit_code == 0, result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("verdict:"))
    assert verdict.startswith(f"verdict: {REPRODUCED_PLUS}: every one of the manifest's 61 clips and 1095 frames")
    assert "  clips added: 2" in result.output and "  clips that moved split: 0" in result.output
    assert "  new files that failed here: 1" in result.output and "failed here, built in the manifest" not in result.output


def test_tampered_real_shard_fails_verify(pocus_release, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(pocus_release, copy)
    victim = sorted((copy / "data" / "frames" / "pocus").glob("*.parquet"))[2]
    flip_byte(victim, 1 / 3)
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and victim.name in result.output


def test_ctrl_c_stops_a_real_build_at_once_and_it_resumes(pocus_release, pocus_data, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "us4.cli", "build", "pocus", "--raw", f"pocus={pocus_data}", "--out", str(out),
            "--workers", "2", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=as_in_a_terminal)
    wait_for_cached_clips(out, 10)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - start < 1.5
    assert not (out / "release.json").exists()
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert " reused" in resumed.stdout and " 0 reused" not in resumed.stdout
    assert digest(out) == digest(pocus_release)
