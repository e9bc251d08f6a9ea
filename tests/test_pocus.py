"""The POCUS recipe on the real sample at ../shared/pocus (skipped with a message where absent)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.registry import SOURCES
from us4.release.read import open_release
from us4.release.verify import compare_to_manifest, verify_release

from .conftest import PIPELINES, REPO, flip_byte, wait_for_cached_clips
from .test_build import digest

MANIFEST = REPO / "manifests" / "pocus-1.0.0.json"


def test_every_real_clip_probes(pocus_data):
    result = CliRunner().invoke(main, ["probe", str(pocus_data / "pocus_videos")])
    assert result.exit_code == 0, result.output
    clips = [p for p in (pocus_data / "pocus_videos").rglob("*") if p.is_file()]
    for clip in clips:
        assert clip.name in result.output


def test_pocus_release_follows_the_pocovid_convention(pocus_release, pocus_data):
    rel = open_release(pocus_release)
    assert verify_release(rel) == []
    videos = rel.videos().to_pandas()
    frames = rel.frames(["video_id", "fold", "split", "label"]).to_pandas()
    convex = [p for p in (pocus_data / "pocus_videos" / "convex").iterdir()
              if not p.name.lower().startswith("vir")]
    assert len(videos) == len(convex) and not rel.lock["failures"]
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
    assert len(rel.lock["sheet"]["missing_files"]) > 0


def test_rebuild_is_byte_identical_and_matches_the_published_manifest(pocus_release, pocus_data, tmp_path):
    again = tmp_path / "again"
    build_release(PIPELINES / "pocus.yaml", {"pocus": pocus_data}, again, workers=1, progress=False)
    assert digest(again) == digest(pocus_release)
    manifest = json.loads(MANIFEST.read_text())
    assert compare_to_manifest(open_release(again).lock, manifest) == []
    result = CliRunner().invoke(main, ["verify", str(again), "--manifest", str(MANIFEST)])
    assert result.exit_code == 0 and "reproduced" in result.output


def test_tampered_real_shard_fails_verify(pocus_release, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(pocus_release, copy)
    victim = sorted((copy / "data" / "frames").glob("*.parquet"))[2]
    flip_byte(victim, 1 / 3)
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and victim.name in result.output


def test_interrupted_real_build_resumes_to_the_same_bytes(pocus_release, pocus_data, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "us4.cli", "build", str(PIPELINES / "pocus.yaml"),
            "--raw", f"pocus={pocus_data}", "--out", str(out), "--workers", "2", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_cached_clips(out, 10)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=60) == 130
    assert not (out / "release.json").exists()
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert " reused" in resumed.stdout and not resumed.stdout.count(" 0 reused")
    assert digest(out) == digest(pocus_release)
