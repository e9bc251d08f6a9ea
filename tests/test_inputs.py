"""Clinical and challenge inputs through the build: DICOM cine loops (files, series, dual
views) and image sequences, sources declared in the recipe, labels from a sheet, hashed
ids, burned-in text masked/excluded/reported, and a release that carries no identity."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from us4.builder import build_release
from us4.cli import main
from us4.contract.lock import Stage, WarningKind
from us4.phantom import PLANTED_IDENTITY, write_phantom_dicom, write_phantom_sequence
from us4.release.read import open_release
from us4.release.verify import verify_release

from .conftest import REPO

DICOM_SAMPLE = REPO.parent / "shared" / "dicom"
NAME_PLANTS = ["Ward 7 DOE^JANE", "DOE_JANE", "MRN5550123"]
TEXT_PLANT = "SAINT NOWHERE INFIRMARY"


def recipe(tmp: Path, name: str = "r.yaml", **source) -> Path:
    spec = {"organ": "liver", "probe": "convex", "input": "dicom", "classes": ["f0", "f1"],
            "label": {"sheet": "labels.csv", "key": "path", "column": "grade"}, "sampling": {"every_n": 3},
            "crop": "auto", **source}
    raw = {"name": "clinic", "version": "0.1.0", "seed": 3, "sources": {"scans": spec},
           "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5}}
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def sheet(folder: Path, rows: list[tuple[str, str]], key: str = "path") -> None:
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, "grade"])
        w.writerows(rows)


def release_text(root: Path) -> str:
    """Every byte of a release as text: tables decoded (images aside), schema metadata, every other file."""
    parts = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            parts.append(str(t.select([c for c in t.column_names if c != "image"]).to_pylist()))
            parts.append(str(t.schema.metadata))
            parts.append(p.read_bytes().decode("latin-1"))
        else:
            parts.append(p.read_bytes().decode("latin-1"))
    return "\n".join(parts).lower()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Path:
    """A hospital export: DICOM named by the patient, identity in every tag class, text burned in."""
    root = tmp_path_factory.mktemp("hospital") / "export"
    patient = root / NAME_PLANTS[0]
    rows = []
    for i, (syntax, photometric) in enumerate((("rle", "MONOCHROME2"), ("jpeg-baseline", "YBR_FULL_422"),
                                               ("jpeg2000-lossless", "RGB"), ("raw-explicit-le", "PALETTE COLOR"))):
        rel = f"{NAME_PLANTS[0]}/{NAME_PLANTS[1]}_{NAME_PLANTS[2]}_{i}.dcm"
        write_phantom_dicom(root / rel, seed=i, n_frames=9, transfer_syntax=syntax, photometric=photometric,
                            identity=PLANTED_IDENTITY, text=f"{TEXT_PLANT} 12:34:56")
        rows.append((rel, ("f0", "f1")[i % 2]))
    write_phantom_dicom(patient / "SERIES", seed=9, n_frames=6, identity=PLANTED_IDENTITY, multi_frame=False,
                        text=f"{TEXT_PLANT} 12:34:56")
    rows.append((f"{NAME_PLANTS[0]}/SERIES", "f1"))
    sheet(root, rows)
    return root


def test_a_hospital_export_leaves_every_identity_behind(hospital, tmp_path):
    rapidocr = pytest.importorskip("rapidocr", reason="text: mask and the OCR of released frames need us4[text]")
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe(tmp_path, crop="none", text="mask")), "--raw",
                                       f"scans={hospital}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rel = open_release(out)
    assert rel.lock.counts.videos == 5 and verify_release(rel).ok
    assert sorted(len(c.frame_index) for c in rel.lock.clips) == [2, 3, 3, 3, 3]  # every 3rd of 6 and of 9
    plants = [v for v in PLANTED_IDENTITY.values()] + NAME_PLANTS + ["1.2.826.0.1.3680043.10.9471", "19990521",
                                                                       "1999-05-21", TEXT_PLANT]
    everything = release_text(out) + result.output.lower()
    assert [p for p in plants if p.lower() in everything] == []
    # the holder can trace every clip back, from the files beside the release
    ids = list(csv.DictReader(open(tmp_path / "rel.local" / "ids.csv")))
    assert {r["video_id"] for r in ids} == {c.video_id for c in rel.lock.clips}
    assert any(NAME_PLANTS[0] in r["path"] for r in ids)
    # ... and no one else can: paths and the text read are the owner's alone
    local = tmp_path / "rel.local"
    private = [local, local / "text-read", *local.rglob("*.csv"), *local.rglob("*.json")]
    assert len(private) >= 2 + 2 + 5 and {oct(p.stat().st_mode & 0o777) for p in private} <= {"0o700", "0o600"}
    # the burned-in text is painted out of every released frame (crop none: it lies inside the crop)
    assert {c.text for c in rel.lock.clips} == {"masked"}
    videos = rel.videos(["video_id", "text_boxes", "frame_ids"]).to_pylist()
    frames = {r["frame_id"]: r["image"]["bytes"] for r in rel.frames(["frame_id", "image"]).to_pylist()}
    for v in videos:
        assert v["text_boxes"]
        for fid in v["frame_ids"]:
            pixels = np.asarray(Image.open(io.BytesIO(frames[fid])))
            for x, y, w, h in v["text_boxes"]:
                assert not pixels[y:y + h, x:x + w].any()
    engine = rapidocr.RapidOCR()
    read = " ".join(t for fid in list(frames)[::3] for t in (engine(np.asarray(Image.open(io.BytesIO(frames[fid])).convert("RGB"))).txts or ()))
    assert "INFIRMARY" not in read.upper() and "12:34" not in read
    card = (out / "README.md").read_text()
    assert "content hash (no path, folder or file name is published)" in card and "| PatientName |" not in card


def test_text_off_still_warns_where_the_file_declares_burned_in_text(hospital, tmp_path):
    """text: off runs no detector, but Burned In Annotation = YES costs nothing to read."""
    out = tmp_path / "off"
    summary = build_release(recipe(tmp_path, "off.yaml", crop="none", text="off"), {"scans": hospital}, out,
                            workers=1, progress=False)
    lock = open_release(out).lock
    assert {c.text for c in lock.clips} == {"warned"} and summary.warnings == lock.warnings
    assert [w.message for w in lock.warnings if w.kind == WarningKind.TEXT_FOUND] == [
        "the file declares burned-in text (Burned In Annotation = YES) and no text check ran; left in the pixels"] * 5


def test_text_actions_exclude_and_warn(hospital, tmp_path):
    pytest.importorskip("rapidocr", reason="the text check needs us4[text]")
    raw = tmp_path / "mixed"
    shutil.copytree(hospital, raw)
    write_phantom_dicom(raw / "clean.dcm", seed=77, n_frames=6, text=None)
    with open(raw / "labels.csv", "a", newline="") as f:
        csv.writer(f).writerow(["clean.dcm", "f0"])
    excluded = tmp_path / "excluded"
    result = CliRunner().invoke(main, ["build", str(recipe(tmp_path, "x.yaml", crop="none", text="exclude")), "--raw",
                                       f"scans={raw}", "--out", str(excluded)])
    assert result.exit_code == 3, result.output
    lock = open_release(excluded).lock
    assert lock.counts.videos == 1 and [f.stage for f in lock.failures] == [Stage.TEXT] * 5
    assert all("burned-in text found" in f.reason for f in lock.failures)
    assert TEXT_PLANT.lower() not in result.output.lower()
    warned = tmp_path / "warned"
    build_release(recipe(tmp_path, "w.yaml", crop="none", text="warn"), {"scans": hospital}, warned, workers=2,
                  progress=False)
    lock = open_release(warned).lock
    assert {c.text for c in lock.clips} == {"warned"}
    assert sum(w.kind == WarningKind.TEXT_FOUND for w in lock.warnings) == 5
    findings = CliRunner().invoke(main, ["audit", str(warned), "--text", "--report", str(tmp_path / "report")])
    assert findings.exit_code == 0, findings.output
    assert "5 clips with burned-in text" in findings.output and TEXT_PLANT in findings.output  # read locally
    assert len(list((tmp_path / "report").glob("text-*.png"))) == 5 and (tmp_path / "report" / "report.md").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(warned, moved)  # on another machine the text read is not at hand
    elsewhere = CliRunner().invoke(main, ["audit", str(moved), "--text"])
    assert "kept only on the machine that built" in elsewhere.output and TEXT_PLANT not in elsewhere.output


def test_scanner_geometry_crop_spacing_and_dual_views(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_dicom(raw / "single.dcm", seed=1, n_frames=6, regions="single")
    write_phantom_dicom(raw / "dual.dcm", seed=2, n_frames=6, size=(256, 160), regions="dual")
    sheet(raw, [("single.dcm", "f0"), ("dual.dcm", "f1")])
    out = tmp_path / "rel"
    build_release(recipe(tmp_path, regions="each", text="warn"), {"scans": raw}, out, workers=1, progress=False)
    from us4.media import probe_clip
    from us4.media.clips import ClipRef

    single = probe_clip(ClipRef("dicom", (str(raw / "single.dcm"),)))
    dual = probe_clip(ClipRef("dicom", (str(raw / "dual.dcm"),)))
    videos = {v["video_id"]: v for v in open_release(out).videos().to_pylist()}
    assert len(videos) == 3 and sum(v.endswith("#view1") for v in videos) == 1
    by_box = {tuple(v["crop_box"]): v for v in videos.values()}
    for region in (*single.regions, *dual.regions):
        v = by_box[tuple(region.box.as_list())]  # the exact region, not a guess
        assert (v["spacing_x_mm"], v["spacing_y_mm"]) == region.spacing_mm == (0.2, 0.2)
    frames = open_release(out).frames(["video_id", "spacing_x_mm", "spacing_y_mm"]).to_pylist()
    assert {(f["spacing_x_mm"], f["spacing_y_mm"]) for f in frames} == {(0.2, 0.2)}


def test_image_sequences_one_clip_per_folder_and_bad_folders_in_the_ledger(tmp_path):
    raw = tmp_path / "clust"
    write_phantom_sequence(raw / "Rb1_seq_a", seed=1, n_frames=12)
    write_phantom_sequence(raw / "Rb2_seq_b", seed=2, n_frames=12, ext=".jpg")
    gap = write_phantom_sequence(raw / "Rb3_seq_gap", seed=3, n_frames=6)
    gap[2].unlink()
    broken = write_phantom_sequence(raw / "Rb4_seq_broken", seed=4, n_frames=6)
    broken[1].write_bytes(b"not a png")
    r = tmp_path / "clust.yaml"
    r.write_text(yaml.safe_dump({"name": "c", "version": "1", "sources": {"clust": {"fps": 12, "ids": "path",
                                                                                    "sampling": {"every_n": 1}}},
                                 "splits": {"kind": "holdout", "validation": 0.5}}))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(r), "--raw", f"clust={raw}", "--out", str(out), "-q"])
    assert result.exit_code == 3, result.output
    lock = open_release(out).lock
    assert {c.video_id: len(c.frame_index) for c in lock.clips} == {"clust/Rb1_seq_a": 12, "clust/Rb2_seq_b": 12}
    failures = {f.video_id: f for f in lock.failures}
    assert set(failures) == {"clust/Rb3_seq_gap", "clust/Rb4_seq_broken"}
    assert "frame_0003" in failures["clust/Rb3_seq_gap"].reason or "gap" in failures["clust/Rb3_seq_gap"].reason
    assert "frame_0002" in failures["clust/Rb4_seq_broken"].reason
    pts = open_release(out).frames(["video_id", "pts"]).to_pylist()
    assert [p["pts"] for p in pts if p["video_id"] == "clust/Rb1_seq_a"][:3] == [0.0, 1 / 12, 2 / 12]


def test_labels_from_a_sheet_keyed_by_content_hash(tmp_path):
    from us4.hashing import sha256_file

    raw = tmp_path / "raw"
    write_phantom_dicom(raw / "a.dcm", seed=1, n_frames=3)
    write_phantom_dicom(raw / "b.dcm", seed=2, n_frames=3)
    write_phantom_dicom(raw / "c.dcm", seed=3, n_frames=3)
    sheet(raw, [(sha256_file(raw / "a.dcm"), "f1"), (sha256_file(raw / "b.dcm"), "f0")], key="sha256")
    out = tmp_path / "rel"
    build_release(recipe(tmp_path, label={"sheet": "labels.csv", "key": "sha256", "column": "grade"}, text="warn"),
                  {"scans": raw}, out, workers=1, progress=False)
    lock = open_release(out).lock
    labels = {c.sha256: c.label for c in lock.clips}
    assert labels == {sha256_file(raw / "a.dcm"): "f1", sha256_file(raw / "b.dcm"): "f0"}
    assert [f.stage for f in lock.failures] == [Stage.PLAN] and "no row for this clip's sha256" in lock.failures[0].reason


def test_bad_dicom_inputs_are_ledger_entries_and_the_rest_builds(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_dicom(raw / "good.dcm", seed=1, n_frames=6)
    truncated = write_phantom_dicom(raw / "truncated.dcm", seed=2, n_frames=6, transfer_syntax="raw-explicit-le")[0]
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    (raw / "notdicom.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    sheet(raw, [("good.dcm", "f0"), ("truncated.dcm", "f1"), ("notdicom.dcm", "f1")])
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe(tmp_path, text="warn")), "--raw", f"scans={raw}",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 3, result.output
    lock = open_release(out).lock
    assert lock.counts.videos == 1
    assert [(f.stage, f.reason.split(":")[0]) for f in lock.failures] == [(Stage.PROBE, "truncated pixel data")]
    assert [e.reason for e in lock.excluded] == ["not an image: a non-standard SOP class without pixel data"]
    assert str(raw) not in lock.failures[0].reason


@pytest.mark.skipif(not (DICOM_SAMPLE / "US1_RLE.dcm").is_file(),
                    reason=f"real DICOM sample not present at {DICOM_SAMPLE} (CI has it); put the two test files there")
def test_the_real_dicom_sample_probes_and_builds(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in DICOM_SAMPLE.glob("*.dcm"):
        shutil.copy(f, raw / f.name)
    probe = CliRunner().invoke(main, ["probe", str(raw)])
    assert probe.exit_code == 0, probe.output
    assert "rle" in probe.output.lower() and "transfer syntax" in probe.output
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump({"name": "real", "version": "1", "sources": {"scans": {
        "organ": "heart", "probe": "phased", "input": "dicom", "fps": 20, "classes": ["cine"],
        "label": {"constant": "cine"}, "sampling": {"every_n": 1}}},
        "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5}}))
    out = tmp_path / "rel"
    build_release(r, {"scans": raw}, out, workers=2, progress=False)
    lock = open_release(out).lock
    assert sorted(len(c.frame_index) for c in lock.clips) == [1, 10]
    assert json.loads(open_release(out).videos(["attributes"]).to_pylist()[0]["attributes"])["Modality"] == "US"


def test_hashed_ids_keep_frame_names_out_of_the_ledger(tmp_path):
    raw = tmp_path / "raw"
    frames = write_phantom_sequence(raw / "SMITH_JOHN_scan", seed=1, n_frames=6)
    for f in frames:  # frame files named after the patient, as some exports do
        f.rename(f.with_name(f"SMITH_JOHN_{f.name}"))
    (raw / "SMITH_JOHN_scan" / "SMITH_JOHN_frame_0003.png").unlink()
    write_phantom_sequence(raw / "DOE_JANE_scan", seed=2, n_frames=6)
    r = tmp_path / "seq.yaml"
    r.write_text(yaml.safe_dump({"name": "s", "version": "1", "sources": {"seq": {
        "organ": "liver", "input": "image_sequence", "fps": 10, "classes": ["x"], "label": {"constant": "x"},
        "sampling": {"every_n": 1}, "text": "off"}}, "splits": {"kind": "holdout", "validation": 0.5}}))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(r), "--raw", f"seq={raw}", "--out", str(out)])
    assert result.exit_code == 3, result.output
    lock = open_release(out).lock
    assert len(lock.failures) == 1 and "file " in lock.failures[0].reason
    everything = release_text(out) + result.output
    assert "SMITH" not in everything and "DOE_JANE" not in everything


def test_the_views_of_one_file_stay_in_one_split_and_a_still_needs_no_rate(tmp_path):
    raw = tmp_path / "raw"
    for i in range(4):
        write_phantom_dicom(raw / f"dual{i}.dcm", seed=i, n_frames=6, size=(256, 160), regions="dual")
    write_phantom_dicom(raw / "still.dcm", seed=9, n_frames=1, frame_time_ms=None)
    sheet(raw, [(f"dual{i}.dcm", ("f0", "f1")[i % 2]) for i in range(4)] + [("still.dcm", "f0")])
    out = tmp_path / "rel"
    build_release(recipe(tmp_path, regions="each", text="warn", sampling={"rate_hz": 3}), {"scans": raw}, out,
                  workers=2, progress=False)
    lock = open_release(out).lock
    assert not lock.failures and len(lock.clips) == 9  # 4 files x 2 views + the still image
    by_file: dict[str, set[str]] = {}
    for clip in lock.clips:
        by_file.setdefault(clip.sha256, set()).add(clip.split)
    assert all(len(splits) == 1 for splits in by_file.values())
    assert sorted(len(c.frame_index) for c in lock.clips)[0] == 1


def test_a_failure_names_files_of_a_hashed_clip_by_position_once():
    """Where names may identify, a reason names files by position; positions already written
    are not read again as names (series files are often named 1, 2, ... 12)."""
    from types import SimpleNamespace

    from us4.builder.ingest import _reason
    from us4.media import MediaError

    numbered = [f"/raw/{NAME_PLANTS[0]}/{i}" for i in range(1, 13)]
    job = SimpleNamespace(ref=SimpleNamespace(files=numbered), rel_path=None)
    assert _reason(job, MediaError(numbered[11], "pixel data ends early")) == "file 12 of 12: pixel data ends early"
    named = [f"/raw/{NAME_PLANTS[1]}/{NAME_PLANTS[2]}_{i:03d}.png" for i in range(1, 4)]
    job = SimpleNamespace(ref=SimpleNamespace(files=named), rel_path=None)
    reason = _reason(job, MediaError(named[1], f"gap: {NAME_PLANTS[2]}_001.png is followed by {NAME_PLANTS[2]}_003.png"
                                               f" (in {named[2]})"))
    assert reason == "file 2 of 3: gap: file 1 of 3 is followed by file 3 of 3 (in file 3 of 3)"
    job = SimpleNamespace(ref=SimpleNamespace(files=named), rel_path="x")  # ids: path keeps the names
    assert _reason(job, MediaError(named[0], "unreadable")) == f"{NAME_PLANTS[2]}_001.png: unreadable"


def test_a_copy_under_another_name_is_left_out_and_traceable(tmp_path):
    """ids: hash gives both files one id: the second is excluded as #copy1, and ids.csv says
    which file that was."""
    raw = tmp_path / "raw"
    first = write_phantom_dicom(raw / "a.dcm", seed=1, n_frames=6)[0]
    shutil.copy(first, raw / "b.dcm")
    sheet(raw, [("a.dcm", "f0"), ("b.dcm", "f0")])
    out = tmp_path / "rel"
    build_release(recipe(tmp_path, text="warn"), {"scans": raw}, out, workers=1, progress=False)
    lock = open_release(out).lock
    kept = lock.clips[0].video_id
    assert [(e.video_id, e.reason) for e in lock.excluded] == [(f"{kept}#copy1", f"same content as {kept}")]
    ids = {r["video_id"]: r["path"] for r in csv.DictReader(open(tmp_path / "rel.local" / "ids.csv"))}
    assert ids == {kept: "a.dcm", f"{kept}#copy1": "b.dcm"}
