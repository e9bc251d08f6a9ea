"""The build on phantom clips: labels, splits, determinism, failures, resume, verify, audit."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from us4.builder import build_release
from us4.cli import main
from us4.errors import RecipeError, ReleaseError
from us4.media.phantom import write_broken_files, write_phantom_clip
from us4.recipe import load_recipe, parse_recipe
from us4.registry import SOURCES
from us4.release.audit import audit_release
from us4.release.read import open_release
from us4.release.verify import compare_to_manifest, verify_release

from .conftest import PIPELINES, flip_byte, wait_for_cached_clips


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".us4-work" not in p.parts}


def tiny_recipe(tmp: Path, **overrides) -> Path:
    raw = {
        "name": "tiny", "version": "0.0.1", "seed": 1,
        "sources": {"butterfly": {"sampling": {"every_n": 4, "max_frames": 6}}},
        "splits": {"kind": "holdout", "validation": 0.5},
    }
    raw.update(overrides)
    path = tmp / "tiny.yaml"
    path.write_text(json.dumps(raw))
    return path


def test_phantom_us4_release_labels_counts_and_layout(phantom_release, phantom_us4_raw):
    rel = open_release(phantom_release)
    assert verify_release(rel) == []
    frames = rel.frames().to_pandas()
    videos = rel.videos().to_pandas()
    n_clips = sum(len(list(d.iterdir())) for d in phantom_us4_raw.values())
    assert len(videos) == n_clips == rel.lock["counts"]["videos"]
    assert len(frames) == rel.lock["counts"]["frames"] == sum(videos["n_kept"])
    assert list(frames["frame_id"]) == list(range(len(frames)))
    # the 12-way head of the reference code, read from the registry by file-name prefix
    for _, v in videos.iterrows():
        cls = SOURCES[v["source"]].class_of_name(Path(v["path"]).name)
        assert (v["label"], v["us4_label"]) == (cls.name, cls.us4_head)
    assert set(videos["us4_label"]) == set(range(12))
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
    # the colour phantom keeps its colour, the others are stored grey
    assert videos["colour"].sum() == 1
    modes = {Image.open(__import__("io").BytesIO(r["bytes"])).mode for r in frames["image"]}
    assert modes == {"L", "RGB"}
    # the frozen phantom lost its repeated frames, and the lock says how many
    assert rel.lock["counts"]["duplicates_dropped"] >= 3


def test_every_video_in_one_split_and_audit_passes(phantom_release, tmp_path):
    result = audit_release(open_release(phantom_release))
    assert result.ok and result.leaks == []
    assert result.videos == open_release(phantom_release).lock["counts"]["videos"]
    # a release whose videos table puts one clip in the other split: the audit names it
    leaky = tmp_path / "leaky"
    shutil.copytree(phantom_release, leaky)
    shard = leaky / "data" / "videos" / "validation-00000-of-00001.parquet"
    table = pq.read_table(shard)
    moved = table.column("video_id")[0].as_py()
    splits = table.column("split").to_pylist()
    splits[0] = "train"
    pq.write_table(table.set_column(table.schema.get_field_index("split"), "split",
                                    pa.array(splits, pa.string())), shard)
    result = audit_release(open_release(leaky))
    assert not result.ok and len(result.leaks) == 1 and result.leaks[0].startswith(moved)
    assert CliRunner().invoke(main, ["audit", str(leaky)]).exit_code == 1


def test_audit_lists_the_same_clip_copied_into_two_splits(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_phantom_clip(raw / "Regphantom_a.mp4", seed=7, n_frames=24)
    shutil.copy(raw / "Regphantom_a.mp4", raw / "Regphantom_b.mp4")  # same content, two videos
    out = tmp_path / "rel"
    build_release(tiny_recipe(tmp_path), {"butterfly": raw}, out, workers=1, progress=False)
    result = audit_release(open_release(out))
    assert result.ok  # whole videos per split...
    assert result.near_duplicates and result.near_duplicates[0].distance == 0  # ...but leaked content
    assert {result.near_duplicates[0].a[2], result.near_duplicates[0].b[2]} == {"train", "validation"}


def test_two_builds_byte_identical_whatever_workers_and_creation_order(phantom_us4_raw, tmp_path):
    # the same clips, copied into new folders in reverse order (another file-system order)
    raw2 = {}
    for name, folder in phantom_us4_raw.items():
        dest = tmp_path / "raw2" / name
        dest.mkdir(parents=True)
        for clip in sorted(folder.iterdir(), reverse=True):
            shutil.copy(clip, dest / clip.name)
        raw2[name] = dest
    a = build_release(PIPELINES / "us4.yaml", phantom_us4_raw, tmp_path / "a", workers=1, progress=False)
    b = build_release(PIPELINES / "us4.yaml", raw2, tmp_path / "b", workers=2, progress=False)
    assert a.frames == b.frames > 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert not (tmp_path / "a" / ".us4-work").exists()  # no failures: the cache is gone


def test_broken_clips_go_to_the_ledger_and_retry_failed_retries_only_them(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        write_phantom_clip(raw / f"Regphantom_{i}.mp4", seed=i, n_frames=24)
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
    ledger = {f["path"]: f for f in lock["failures"]}
    assert set(ledger) == {"Cov_empty.mp4", "Cov_not_video.mp4", "Cov_truncated.mp4", "Xyz_nolabel.mp4"}
    assert "empty" in ledger["Cov_empty.mp4"]["reason"]
    assert "unreadable label" in ledger["Xyz_nolabel.mp4"]["reason"]
    assert ledger["Cov_truncated.mp4"]["stage"] in ("probe", "decode")
    for path in ledger:
        assert path in result.output  # each failure named on its own line
    assert "4 clips failed" in result.output
    assert lock["counts"]["videos"] == 3
    assert {e["path"] for e in lock["excluded"]} == {"notes.txt"}
    assert verify_release(open_release(out)) == []
    # the broken files are replaced by good clips: only those are ingested again
    for kind in ("empty", "not_video", "truncated"):
        write_phantom_clip(raw / f"Cov_{kind}.mp4", seed=50, n_frames=24)
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False, retry_failed=True)
    assert summary.ingested == 3 and summary.reused == 3
    assert [f.path for f in summary.failures] == ["Xyz_nolabel.mp4"]
    assert summary.videos == 6


def test_failures_are_kept_without_retry_flag(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_phantom_clip(raw / "Regphantom_0.mp4", seed=0, n_frames=24)
    (raw / "Cov_bad.mp4").write_text("not a video")
    out = tmp_path / "rel"
    recipe = tiny_recipe(tmp_path)
    build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    again = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert again.ingested == 0 and [f.path for f in again.failures] == ["Cov_bad.mp4"]


def test_killed_build_resumes_to_the_same_bytes(phantom_us4_raw, tmp_path):
    args = [sys.executable, "-m", "us4.cli", "build", str(PIPELINES / "us4.yaml"), "--workers", "1", "-q"]
    for name, folder in phantom_us4_raw.items():
        args += ["--raw", f"{name}={folder}"]
    ref = tmp_path / "ref"
    subprocess.run(args + ["--out", str(ref)], check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_cached_clips(out, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = wait_for_cached_clips(out, 0)
    assert 3 <= done < sum(len(list(d.iterdir())) for d in phantom_us4_raw.values())
    assert not (out / "release.json").exists()
    resumed = subprocess.run(args + ["--out", str(out)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} reused" in resumed.stdout
    assert digest(out) == digest(ref)


def test_interrupted_install_leaves_no_lock_and_is_redone(phantom_release, phantom_us4_raw, tmp_path,
                                                          monkeypatch):
    import us4.builder.run as run

    out = tmp_path / "rel"
    shutil.copytree(phantom_release, out)  # a finished release, rebuilt in place
    install = run._install

    def killed_midway(staging: Path, target: Path) -> None:
        (target / "release.json").unlink()
        shutil.rmtree(target / "data")
        raise KeyboardInterrupt  # after the old release is gone, before the new one is in

    monkeypatch.setattr(run, "_install", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        build_release(PIPELINES / "us4.yaml", phantom_us4_raw, out, workers=1, progress=False)
    with pytest.raises(ReleaseError, match="release.json: missing"):
        open_release(out)  # no lock: nobody takes the half-installed folder for a release
    monkeypatch.setattr(run, "_install", install)
    again = build_release(PIPELINES / "us4.yaml", phantom_us4_raw, out, workers=1, progress=False)
    assert again.ingested == 0 and again.reused == again.videos  # everything came from the cache
    assert digest(out) == digest(phantom_release)


def test_tampered_files_are_named_by_verify(phantom_release, tmp_path):
    out = tmp_path / "rel"
    shutil.copytree(phantom_release, out)
    shard = sorted((out / "data" / "frames").glob("*.parquet"))[0]
    flip_byte(shard)
    card = out / "README.md"
    card.write_text(card.read_text() + "\nhand edit\n")
    (out / "data" / "frames" / "extra.parquet").write_bytes(b"x")
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert shard.name in result.output and "modified" in result.output
    assert "README.md" in result.output and "extra.parquet" in result.output
    truncated = sorted((out / "data" / "videos").glob("*.parquet"))[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert any(truncated.name in p and "truncated" in p for p in verify_release(open_release(out)))


def test_verify_against_a_manifest_names_what_differs(phantom_release, tmp_path):
    lock = open_release(phantom_release).lock
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(lock))
    ok = CliRunner().invoke(main, ["verify", str(phantom_release), "--manifest", str(manifest)])
    assert ok.exit_code == 0 and "reproduced" in ok.output
    other = json.loads(json.dumps(lock))
    other["inputs"][0]["sha256"] = "0" * 64
    other["environment"]["pillow"] = "9.0.0"
    other["shards"][0]["sha256"] = "f" * 64
    diffs = compare_to_manifest(lock, other)
    text = "\n".join(diffs)
    assert f"clip {lock['inputs'][0]['path']}" in text
    assert "library pillow" in text and lock["shards"][0]["path"] in text
    assert "pixels match" in text  # same frames, different bytes: the encoder is to blame


def test_clear_errors_for_bad_invocations(tmp_path, phantom_us4_raw):
    runner = CliRunner()
    recipe = str(PIPELINES / "us4.yaml")
    raws = [a for n, f in phantom_us4_raw.items() if n != "clust" for a in ("--raw", f"{n}={f}")]
    r = runner.invoke(main, ["build", recipe, *raws, "--raw", f"clust={tmp_path / 'nope'}", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "clust" in r.output and "no such folder" in r.output
    r = runner.invoke(main, ["build", recipe, *raws, "--raw", f"clsut={tmp_path}", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown source 'clsut'" in r.output and "clust" in r.output
    r = runner.invoke(main, ["build", recipe, *raws, "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "--raw clust=DIR" in r.output
    r = runner.invoke(main, ["build", recipe, "--raw", "clust", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "SOURCE=DIR" in r.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    r = runner.invoke(main, ["build", recipe, *raws, "--raw", f"clust={phantom_us4_raw['clust']}", "--out", str(busy)])
    assert r.exit_code == 1 and "not empty" in r.output and (busy / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["build", recipe, *[a for n in phantom_us4_raw for a in ("--raw", f"{n}={empty}")],
                             "--out", str(tmp_path / "never")])
    assert r.exit_code == 1 and "no video clips found" in r.output and not (tmp_path / "never").exists()
    r = runner.invoke(main, ["verify", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such release folder" in r.output


@pytest.mark.parametrize("raw, message", [
    ({"name": "x", "version": "1", "sources": {"nope": {"sampling": {"every_n": 2}}}}, "unknown source 'nope'"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2, "evenly": 3}}}}, "sampling"),
    ({"name": "x", "version": "1", "sources": {"clust": {}}}, "needs a 'sampling' policy"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2}, "classes": ["f9"]}}}, "unknown classes"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2}, "crop": {"box": [0, 0, -1, 5]}}}}, "crop box"),
    ({"name": "x", "sources": {}}, "missing required key 'version'"),
    ({"name": "x", "version": "1", "sources": {"clust": {"sampling": {"every_n": 2}}}, "splits": {"kind": "folds", "k": 1}}, "splits.k"),
])
def test_recipe_errors_are_specific(raw, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw)


def test_recipe_hash_is_stable_and_sensitive():
    a, b = load_recipe(PIPELINES / "pocus.yaml"), load_recipe(PIPELINES / "pocus.yaml")
    assert a.sha256 == b.sha256
    raw = a.to_dict()
    raw["dedup"]["threshold"] = 2.0
    assert parse_recipe(raw).sha256 != a.sha256


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


def test_pocus_layout_sheet_labels_exclusions_and_folds(phantom_pocus_release, phantom_pocus_raw):
    rel = open_release(phantom_pocus_release)
    videos = rel.videos().to_pandas()
    assert set(videos["probe"]) == {"convex"} and "viral" not in set(videos["label"])
    reasons = {e["path"]: e["reason"] for e in rel.lock["excluded"]}
    assert any("linear" in p for p in reasons) and any(p.split("/")[-1].startswith("Vir") for p in reasons)
    assert rel.lock["sheet"]["missing_files"] == ["Cov_phantom_not_shipped (covid, convex)"]
    assert sorted(set(videos["fold"])) == [0, 1, 2, 3, 4]
    assert set(videos["split"]) == {f"fold{i}" for i in range(5)}
    frames = rel.frames(["video_id", "fold"]).to_pandas()
    assert (frames.groupby("video_id")["fold"].nunique() == 1).all()
    # stratified: each class spread over the folds
    for _, group in videos.groupby("label"):
        assert group["fold"].value_counts().max() - group["fold"].value_counts().min() <= 1
    assert set(videos["licence"]) == {"CC BY 4.0"}


def test_sheet_label_wins_over_the_file_name_and_is_reported(phantom_pocus_raw, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_pocus_raw, data)
    sheet = data / "dataset_metadata.csv"
    sheet.write_text(sheet.read_text().replace("Cov_phantom_00,COVID-19", "Cov_phantom_00,regular"))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(PIPELINES / "pocus.yaml"), "--raw", f"pocus={data}",
                                       "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "metadata sheet says regular" in result.output
    assert "metadata sheet row without its file: Cov_phantom_not_shipped" in result.output
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
