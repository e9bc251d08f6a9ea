"""COVID-BLUES as a source us4 ships, and the recipe features it needs, general ones: a sheet
joined to clips through a key a pattern takes from the clip's path, that key's row as the split
group, and per-video facts from a sheet as typed columns of the videos table (lock, verify,
card, Croissant). Small releases made here test the features; the real build from
../shared/blues (skipped where absent) tests the packaged recipe."""
from __future__ import annotations

import collections
import csv
import hashlib
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.contract.lock import FORMAT_V2, LockError, read_lock
from us4.errors import RawFolderError, RecipeError
from us4.phantom import write_phantom_clip
from us4.recipe import MAX_FACTS, load_recipe, parse_recipe
from us4.release.read import open_release
from us4.release.verify import verify_release

from .conftest import REPO
from .test_trust_rows import copy, read_lock as lock_json, rewrite_shard

pytestmark = pytest.mark.slow  # end-to-end (the real COVID-BLUES build): python -m pytest -m slow

BLUES = REPO.parent / "shared" / "blues"
PATTERN = r"patient_(\d+)_"


def write_sheet(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def videos(rel: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(rel.glob("data/videos/*/*.parquet"))])


def recipe(source: dict, *, name: str = "study", splits: dict | None = None) -> dict:
    return {"name": name, "version": "1.0.0", "description": "a small study", "seed": 3,
            "sources": {"study": {"organ": "lung", "probe": "convex", "classes": ["covid", "negative"],
                                  "sampling": {"evenly": 3}, "crop": "none", "text": "off", **source}},
            "dedup": {"threshold": 0},
            "splits": splits or {"kind": "folds", "k": 2, "group_column": "patient_id"},
            "output": {"png_compress_level": 1, "shard_max_mb": 256}}


#: patients 1 and 3 (covid) and 2 (negative) with rows; 9 has clips but no row; other.mp4 has no patient in its name
CLIPS = ["vids/patient_1_L1.mp4", "vids/patient_1_R1.mp4", "vids/patient_1_R2.mp4", "vids/patient_2_L1.mp4",
         "vids/patient_2_R1.mp4", "vids/patient_3_L1.mp4", "vids/patient_9_L1.mp4", "vids/other.mp4"]
LABEL = {"sheet": "patients.csv", "key": {"pattern": PATTERN}, "key_column": "patient_id", "column": "pcr"}
FACTS = {"sheet": "scores.csv", "key": "stem", "key_column": "video",
         "columns": {"score": {"column": "Score", "type": "float"}, "b_lines": {"column": "B-lines", "type": "bool"},
                     "reader": {"column": "Reader", "type": "int"}, "note": {"column": "note", "type": "str"}}}


@pytest.fixture(scope="module")
def study_raw(tmp_path_factory) -> Path:
    """Tiny clips of four patients, a patient sheet and a per-video sheet with one unreadable cell
    (patient_1_R2's B-lines), one empty cell, one row missing (patient_2_R1) and cells with spaces."""
    raw = tmp_path_factory.mktemp("study") / "raw"
    for i, rel in enumerate(CLIPS):
        write_phantom_clip(raw / rel, seed=i, n_frames=6, size=(64, 48), text=None)
    write_sheet(raw / "patients.csv", [["patient_id", "pcr", "age"], ["1", "covid", "70"], ["2", "negative", "50"],
                                       ["3", "covid", "61"]])
    write_sheet(raw / "scores.csv", [
        ["video", "Score", "B-lines", "Reader", "note"],
        ["patient_1_L1", "2.0", "yes ", "1", "pleura broken"], ["patient_1_R1", "3", "NO", "2.0", ""],
        ["patient_1_R2", "1.0", "maybe", "1", "x"], ["patient_2_L1", "0.0", "no", "2", "clear"],
        ["patient_3_L1", " 1.5", "true", "1", "small"], ["patient_9_L1", "1.0", "1", "1", "n"]])
    return raw


@pytest.fixture(scope="module")
def study(study_raw, tmp_path_factory) -> Path:
    """The study built with the pattern-joined label, groups by patient and the facts (read-only)."""
    path = tmp_path_factory.mktemp("study-recipe") / "study.yaml"
    path.write_text(yaml.safe_dump(sort_keys=False, data=recipe({"label": LABEL, "facts": FACTS})))
    out = path.parent / "rel"
    build_release(path, {"study": study_raw}, out, workers=1, progress=False)
    return out


def test_pattern_joined_sheet_labels_each_clip_of_a_patient(study):
    lock = open_release(study).lock
    labels = {c.video_id: c.label for c in lock.clips}
    assert labels == {"study/vids/patient_1_L1.mp4": "covid", "study/vids/patient_1_R1.mp4": "covid",
                      "study/vids/patient_2_L1.mp4": "negative", "study/vids/patient_2_R1.mp4": "negative",
                      "study/vids/patient_3_L1.mp4": "covid"}
    failures = {f.video_id: (str(f.stage), f.reason) for f in lock.failures}
    assert failures["study/vids/other.mp4"] == ("plan", "unreadable label: the clip's path does not match the "
                                                        "label key pattern")
    # a public source's key is named (it is in the published path already)
    assert failures["study/vids/patient_9_L1.mp4"] == ("plan", "unreadable label: patients.csv has no row whose "
                                                               "'patient_id' is '9'")


def test_clips_names_the_folder_of_the_clips_and_other_files_are_no_clips(study_raw, tmp_path):
    """`clips: vids` takes the clips of vids/ alone (a repository's root also holds a sample gif and
    a README); ids are relative to it, sheets stay relative to the raw folder."""
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(study_raw, raw)
    write_phantom_clip(raw / "sample_video.gif", seed=99, n_frames=3, size=(32, 32), text=None)
    (raw / "README.md").write_text("a study\n")
    out = build_release(parse_recipe(recipe({"label": LABEL, "clips": "vids"})), {"study": raw}, tmp_path / "rel",
                        workers=1, progress=False)
    lock = open_release(out.out).lock
    assert sorted(c.video_id for c in lock.clips) == ["study/patient_1_L1.mp4", "study/patient_1_R1.mp4",
                                                     "study/patient_1_R2.mp4", "study/patient_2_L1.mp4",
                                                     "study/patient_2_R1.mp4", "study/patient_3_L1.mp4"]
    assert sorted(f.video_id for f in lock.failures) == ["study/other.mp4", "study/patient_9_L1.mp4"]
    assert lock.excluded == [] and [s.path for s in lock.sheets] == ["patients.csv"]
    with pytest.raises(RawFolderError, match="the recipe's clips folder videos is not there"):
        build_release(parse_recipe(recipe({"label": LABEL, "clips": "videos"})), {"study": raw}, tmp_path / "r2",
                      workers=1, progress=False)
    with pytest.raises(RecipeError, match="clips folder"):
        parse_recipe(recipe({"label": LABEL, "clips": "../elsewhere"}))


def test_every_sheet_read_is_in_the_lock(study, study_raw):
    lock = open_release(study).lock
    assert [(s.source, s.path, s.sha256, s.bytes) for s in lock.sheets] == [
        ("study", name, hashlib.sha256((study_raw / name).read_bytes()).hexdigest(), (study_raw / name).stat().st_size)
        for name in ("patients.csv", "scores.csv")]


def test_the_joined_key_is_the_split_group(study_raw, tmp_path):
    """Patient 1 has three clips, 2 two, 3 and the rest one: with group_column each patient is one unit
    (the two folds then hold whole patients), whatever the seed deals."""
    for seed in range(4):
        path = tmp_path / f"s{seed}.yaml"
        r = recipe({"label": LABEL})
        r["seed"] = seed
        path.write_text(yaml.safe_dump(sort_keys=False, data=r))
        build_release(path, {"study": study_raw}, tmp_path / f"r{seed}", workers=1, progress=False)
        lock = open_release(tmp_path / f"r{seed}").lock
        by_patient = collections.defaultdict(set)
        for clip in lock.clips:
            by_patient[re.search(PATTERN, clip.video_id).group(1)].add((clip.split, clip.group))
        assert {p: len(s) for p, s in by_patient.items()} == {"1": 1, "2": 1, "3": 1}
        assert next(iter(by_patient["1"]))[1] is not None  # a group of clips, named by content
        assert "patient" not in next(iter(by_patient["1"]))[1]


def test_facts_are_typed_columns_of_the_videos_table(study):
    table = videos(study)
    schema = table.schema
    assert schema.names[-4:] == ["score", "b_lines", "reader", "note"]  # after the table's own, in recipe order
    assert [schema.field(n).type for n in ("score", "b_lines", "reader", "note")] == \
        [pa.float64(), pa.bool_(), pa.int64(), pa.string()]
    rows = {r["video_id"].split("/")[-1]: (r["score"], r["b_lines"], r["reader"], r["note"])
            for r in table.drop_columns(["frame_ids", "frame_indices"]).to_pylist()}
    assert rows == {"patient_1_L1.mp4": (2.0, True, 1, "pleura broken"),
                    "patient_1_R1.mp4": (3.0, False, 2, None),  # "NO", "2.0" and an empty note
                    "patient_2_L1.mp4": (0.0, False, 2, "clear"),
                    "patient_2_R1.mp4": (None, None, None, None),  # no row: nulls
                    "patient_3_L1.mp4": (1.5, True, 1, "small")}
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["score"] == {"dtype": "double", "_type": "Value"} and features["b_lines"]["dtype"] == "bool"
    lock = open_release(study).lock
    assert {c.video_id.split("/")[-1]: c.facts for c in lock.clips}["patient_1_R1.mp4"] == \
        {"score": 3.0, "b_lines": False, "reader": 2, "note": None}


def test_an_unreadable_fact_is_a_ledger_entry_and_a_missing_row_a_warning(study):
    lock = open_release(study).lock
    failure = next(f for f in lock.failures if f.video_id.endswith("patient_1_R2.mp4"))
    assert (str(failure.stage), failure.reason) == (
        "plan", "unreadable fact: row 4 of scores.csv: 'B-lines' is not yes, no, true, false, 1 or 0")
    assert "maybe" not in (study / "release.json").read_text()  # the cell stays beside the release
    withheld = (study.parent / "rel.local" / "withheld.csv").read_text()
    assert "'maybe'" in withheld
    warning = next(w for w in lock.warnings if w.kind == "facts_missing")
    assert warning.message == "scores.csv has no row for 1 clip (matched by the clip's stem): its score, b_lines, " \
                              "reader, note are null"


def test_verify_compares_every_fact_with_the_lock(study, tmp_path):
    rel = copy(study, tmp_path / "rel")
    assert verify_release(open_release(rel)).ok
    shard = next(s["path"] for s in lock_json(rel)["shards"] if s["config"] == "videos")

    def rescore(rows: list[dict]) -> None:
        rows[0]["score"] = 0.5 if rows[0]["score"] != 0.5 else 1.0

    rewrite_shard(rel, shard, rescore)
    problems = verify_release(open_release(rel)).problems
    assert any(re.search(rf"{re.escape(shard)} row 0: score .*, the lock says", p) for p in problems), problems


def test_card_and_croissant_describe_the_facts(study, tmp_path, caplog):
    card = (study / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    videos_info = next(c for c in header["dataset_info"] if c["config_name"] == "videos")
    assert videos_info["features"][-4:] == [{"name": "score", "dtype": "double"}, {"name": "b_lines", "dtype": "bool"},
                                            {"name": "reader", "dtype": "int64"}, {"name": "note", "dtype": "string"}]
    # per class, over the clips with a value: covid 2.0, 3.0, 1.5 -> 2.17; yes of b_lines 2 of 3; negative: no value
    assert "| label | videos | score (mean) | b_lines (share of yes) | reader (mean) | note (with a text) |" in card
    assert "| covid | 3 | 2.17 (3) | 67% (3) | 1.33 (3) | 2 |" in card
    assert "| negative | 2 | 0.00 (1) | 0% (1) | 2.00 (1) | 1 |" in card
    croissant = json.loads((study / "croissant.json").read_text())
    fields = {f["name"]: f["dataType"] for rs in croissant["recordSet"] if rs["@id"] == "videos" for f in rs["field"]}
    assert (fields["score"], fields["b_lines"], fields["reader"], fields["note"]) == \
        ("sc:Float", "sc:Boolean", "sc:Integer", "sc:Text")
    expected = {r["video_id"]: r["score"] for r in videos(study).select(["video_id", "score"]).to_pylist()}
    # both readers take the columns as declared: mlcroissant by the Croissant fields, datasets by the card's features
    mlc = pytest.importorskip("mlcroissant", reason="mlcroissant is a test dependency: pip install -e '.[test]'")
    records = mlc.Dataset(jsonld=str(study / "croissant.json")).records("videos")
    read = {r["videos/video_id"].decode(): r["videos/score"] for r in records}
    assert {k: None if v != v else v for k, v in read.items()} == expected  # a null float reads as NaN
    datasets = pytest.importorskip("datasets", reason="datasets is a test dependency: pip install -e '.[test]'")
    caplog.set_level(logging.WARNING)
    datasets.logging.enable_propagation()
    try:
        ds = datasets.load_dataset(str(study), "videos", cache_dir=str(tmp_path / "cache"))
    finally:
        datasets.logging.disable_propagation()
    assert "dataset_info" not in caplog.text  # the card's features were taken, not dropped
    split = ds[sorted(ds)[0]]
    assert split.features["b_lines"] == datasets.Value("bool") and split.features["note"] == datasets.Value("string")
    assert {r["video_id"]: r["score"] for r in split} == {k: v for k, v in expected.items() if k in split["video_id"]}


def test_a_hashed_source_publishes_no_key_or_cell_it_read(study_raw, tmp_path):
    """ids: hash: neither the patient number a pattern took from a path, nor an unreadable cell,
    reaches the release or the console; both are in the local files."""
    raw = copy(study_raw, tmp_path / "raw")
    write_sheet(raw / "patients.csv", [["patient_id", "pcr"], ["1", "covid"], ["2", "negative"], ["3", "covid"]])
    write_sheet(raw / "scores.csv", [["video", "Score"], ["patient_1_L1", "SMITHJOHN"], ["patient_2_L1", "1"]])
    (raw / "vids" / "patient_9_L1.mp4").rename(raw / "vids" / "patient_4711_L1.mp4")
    facts = {**FACTS, "columns": {"score": {"column": "Score", "type": "float"}}}
    path = tmp_path / "hashed.yaml"
    path.write_text(yaml.safe_dump(sort_keys=False, data=recipe({"ids": "hash", "label": LABEL, "facts": facts})))
    result = CliRunner().invoke(main, ["build", str(path), "--raw", f"study={raw}", "--out", str(tmp_path / "rel"),
                                       "--workers", "1", "--quiet"])
    assert result.exit_code == 3, result.output  # some clips failed
    published = result.output + "".join(p.read_text(errors="replace") for p in (tmp_path / "rel").rglob("*")
                                        if p.is_file() and p.suffix in (".json", ".md"))
    for secret in ("4711", "SMITHJOHN", "patient_1_L1", "patient_2"):
        assert secret not in published
    lock = open_release(tmp_path / "rel").lock
    reasons = sorted(f.reason for f in lock.failures)
    assert "unreadable label: patients.csv has no row whose 'patient_id' is this clip's key" in reasons
    assert "unreadable fact: row 2 of scores.csv: 'Score' is not a finite number" in reasons
    withheld = (tmp_path / "rel.local" / "withheld.csv").read_text()
    assert "'4711'" in withheld and "'SMITHJOHN'" in withheld


@pytest.mark.parametrize("facts, error", [
    ({"columns": {"label": {"column": "Score", "type": "float"}}}, "'label' is a column the videos table has already"),
    ({"columns": {"Score": {"column": "Score"}}}, "must be lower-case letters"),
    ({"columns": {"s": {"column": "Score", "type": "decimal"}}}, "type must be one of float, int, bool, str"),
    ({"columns": {f"f{i}": {"column": "Score"} for i in range(MAX_FACTS + 1)}}, f"at most {MAX_FACTS}"),
    ({"key": {"pattern": "patient_\\d+"}, "columns": {"s": {"column": "Score"}}}, "with a group that captures"),
    ({"key": {"pattern": "patient_(\\d+"}, "columns": {"s": {"column": "Score"}}}, "missing ), unterminated"),
    ({"key": "name", "columns": {"s": {"column": "Score"}}}, "key must be path|stem|sha256|{pattern: REGEX}"),
    ({"sheet": "../scores.csv", "columns": {"s": {"column": "Score"}}}, "facts sheet"),
])
def test_a_bad_facts_block_is_one_recipe_error(facts, error):
    block = {"sheet": "scores.csv", "key": "stem", "key_column": "video", **facts}
    with pytest.raises(RecipeError, match=re.escape(error)):
        parse_recipe(recipe({"label": LABEL, "facts": block}))


def test_a_pattern_needs_the_sheet_column_it_meets():
    label = {k: v for k, v in LABEL.items() if k != "key_column"}
    with pytest.raises(RecipeError, match="a label key pattern needs key_column"):
        parse_recipe(recipe({"label": label}))


def test_two_sources_give_one_fact_one_type():
    r = recipe({"label": LABEL, "facts": {**FACTS, "columns": {"score": {"column": "Score", "type": "float"}}}})
    r["sources"]["other"] = {**r["sources"]["study"],
                             "facts": {**FACTS, "columns": {"score": {"column": "Score", "type": "str"}}}}
    with pytest.raises(RecipeError, match="fact 'score' is str in source 'other' and float in source 'study'"):
        parse_recipe(r)


def test_a_fact_column_the_sheet_lacks_stops_the_build_naming_it(study_raw, tmp_path):
    facts = {**FACTS, "columns": {"score": {"column": "Severity", "type": "float"}}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(sort_keys=False, data=recipe({"label": LABEL, "facts": facts})))
    with pytest.raises(RawFolderError, match=r"scores.csv: sheet has no 'Severity' column \(it has: video, Score"):
        build_release(path, {"study": study_raw}, tmp_path / "rel", workers=1, progress=False)


def test_the_recipe_keeps_its_fact_order_through_the_lock(study):
    lock = open_release(study).lock
    assert lock.fact_fields() == [("score", "float"), ("b_lines", "bool"), ("reader", "int"), ("note", "str")]
    assert [c.name for c in lock.recipe.sources["study"].facts.columns] == ["score", "b_lines", "reader", "note"]


def test_a_lock_whose_clip_facts_are_not_its_recipes_is_refused(study):
    lock = json.loads((study / "release.json").read_text())
    lock["clips"][0]["facts"]["score"] = "high"
    with pytest.raises(LockError, match="fact score is 'high', not a float"):
        read_lock(json.dumps(lock))
    del lock["clips"][0]["facts"]["score"]
    with pytest.raises(LockError, match="facts .*, but its recipe declares"):
        read_lock(json.dumps(lock))


def test_a_format_2_lock_reads_with_no_facts_and_writes_back_unchanged():
    path = REPO / "manifests" / "pocus-1.1.0.json"
    lock = read_lock(path.read_bytes())
    assert lock.source_format == FORMAT_V2 and all(c.facts == {} for c in lock.clips)
    assert lock.to_json() == json.loads(path.read_text())
    raw = json.loads(path.read_text())
    raw["clips"][0]["facts"] = {}
    with pytest.raises(LockError, match="unknown field clips.0.facts"):
        read_lock(json.dumps(raw))


# --- the real COVID-BLUES, as its authors publish it -----------------------------------------------


@pytest.fixture(scope="session")
def blues_release(tmp_path_factory) -> Path:
    """../shared/blues built with the packaged recipe, once a session (read-only: copy to modify)."""
    if not (BLUES / "lus_videos").is_dir():
        pytest.skip(f"COVID-BLUES not present: put the dataset as its authors publish it (lus_videos/, "
                    f"clinical_variables.csv, severity.csv) at {BLUES} to run this real-data test")
    out = tmp_path_factory.mktemp("rel") / "blues"
    build_release("blues", {"blues": BLUES}, out, workers=2, progress=False)
    return out


def test_blues_builds_with_pcr_labels_patients_in_one_fold_and_severity(blues_release):
    lock = open_release(blues_release).lock
    assert collections.Counter(c.label for c in lock.clips) == {"covid": 197, "negative": 165}
    assert not lock.failures
    folds = collections.defaultdict(set)
    for clip in lock.clips:
        folds[re.search(PATTERN, clip.video_id).group(1)].add(clip.split)
    assert len(folds) == 63 and all(len(f) == 1 for f in folds.values())
    table = videos(blues_release)
    assert table.schema.field("severity").type == pa.float64()
    severity = {r["path"].split("/")[-1].removesuffix(".mp4"): r["severity"]
                for r in table.select(["path", "severity"]).to_pylist()}
    with open(BLUES / "severity.csv", newline="") as f:
        assert severity == {r["video_file"]: float(r["Severity Score"]) for r in csv.DictReader(f)}
    assert [s.path for s in lock.sheets] == ["clinical_variables.csv", "severity.csv"]
    assert verify_release(open_release(blues_release)).ok


def test_blues_rebuild_reproduces_the_shipped_manifest_pixel_for_pixel(blues_release):
    """Every one of the 7,931 frames decoded again and hashed: the pixels, labels and splits of
    manifests/blues-1.0.0.json (whose PNGs Pillow encoded; the frames shards differ in bytes alone)."""
    result = CliRunner().invoke(main, ["verify", str(blues_release), "--manifest", "blues-1.0.0"])
    assert result.exit_code == 0, result.output
    assert ("verdict: reproduced: every one of the manifest's 362 clips and 7931 frames is here with identical "
            "pixels, labels and splits") in result.output
    assert "  frames with other pixels: 0" in result.output and "  clips that moved split: 0" in result.output


def test_blues_card_cites_the_paper_and_summarises_severity(blues_release):
    card = (blues_release / "README.md").read_text()
    assert "doi     = {10.1109/JBHI.2025.3543686}" in card and "CC BY-NC-ND 4.0" in card
    assert "| label | videos | severity (mean) | a_lines (share of yes) | b_lines (share of yes) |" in card


def test_the_packaged_recipe_is_found_by_name():
    r = load_recipe("blues")
    assert r.sources["blues"].label.key.pattern == PATTERN and r.splits.group_column == "patient_id"
    assert r.fact_fields() == [("severity", "float"), ("a_lines", "bool"), ("b_lines", "bool")]
