"""The release contract: a typed lock validated at the door, paths that cannot leave their
folder, a card and a Croissant description verified by the hash the lock records, and
releases of us4 0.1.0 that still verify and load."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import us4
from us4.cli import main
from us4.contract.lock import FORMAT, FORMAT_V1, LockError, dump_lock, read_lock
from us4.errors import ReleaseError, VerificationError
from us4.paths import UnsafePathError, inside, safe_commit, safe_name, safe_relpath
from us4.release.read import open_release
from us4.release.verify import verify_release

from .conftest import REPO

FIXTURE_V1 = REPO / "tests" / "fixtures" / "release-0.1.0"


def raw_lock(release: Path) -> dict:
    return json.loads((release / "release.json").read_text())


def write_lock(release: Path, lock: dict) -> None:
    (release / "release.json").write_text(json.dumps(lock, indent=1, sort_keys=True))


# --- the typed lock -------------------------------------------------------------------


def test_lock_round_trips_byte_for_byte(phantom_pocus_release):
    data = (phantom_pocus_release / "release.json").read_bytes()
    lock = read_lock(data)
    assert lock.format == FORMAT and dump_lock(lock) == data
    assert lock.sha256 == hashlib.sha256(json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"),
                                                    ensure_ascii=False).encode()).hexdigest()


def test_the_sheets_a_build_read_are_in_its_lock(pocus_release, pocus_data):
    """POCUS's metadata sheet, by its place in data/ and its content: what `us4 fetch` checks."""
    sheet = pocus_data / "dataset_metadata.csv"
    assert [f.model_dump() for f in open_release(pocus_release).lock.sheets] == [
        {"source": "pocus", "path": "dataset_metadata.csv", "sha256": hashlib.sha256(sheet.read_bytes()).hexdigest(),
         "bytes": sheet.stat().st_size}]


def test_a_format_2_lock_is_read_and_written_back_as_format_2(tmp_path):
    """The shipped pocus-1.1.0 lock (us4 0.2.0): read with its sheets empty, written back byte
    for byte, so evidence attached to a release of 0.2.0 changes none of its data's bytes; a
    field format 3 added is refused in it."""
    from us4.contract.lock import FORMAT_V2

    data = (REPO / "manifests" / "pocus-1.1.0.json").read_bytes()
    lock = read_lock(data)
    assert (lock.format, lock.source_format, lock.sheets) == (FORMAT, FORMAT_V2, [])
    assert dump_lock(lock) == data
    assert lock.sha256 == hashlib.sha256(json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"),
                                                    ensure_ascii=False).encode()).hexdigest()
    later = lock.model_copy(update={"attachments": {"benchmark.json": "0" * 64}})
    assert later.data_sha256() == lock.data_sha256() and json.loads(dump_lock(later))["format"] == FORMAT_V2
    with_sheets = {**json.loads(data), "sheets": []}
    with pytest.raises(LockError, match="unknown field sheets"):
        read_lock(json.dumps(with_sheets))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="blue"), "unknown field colour"),
    (lambda d: d.pop("clips"), "missing field clips"),
    (lambda d: d["counts"].update(frames="1095"), "counts.frames"),
    (lambda d: d["shards"][0].update(rows=-1), "shards.0.rows"),
    (lambda d: d["shards"][0].update(sha256="xyz"), "shards.0.sha256"),
    (lambda d: d["failures"].append({"source": "pocus", "video_id": "v", "sha256": None, "stage": "ingest",
                                     "reason": "r"}), "failures.0.stage"),
    (lambda d: d["clips"][0].update(shard=999), "names shard 999"),
    (lambda d: d.update(format="us4-release/4"), "newer us4"),
    (lambda d: d["sheets"].insert(0, {"source": "pocus", "path": "../x.csv", "sha256": "0" * 64, "bytes": 1}),
     "sheets.0.path"),
])
def test_a_malformed_lock_is_one_clear_error(phantom_pocus_release, tmp_path, change, message):
    rel = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel)
    lock = raw_lock(rel)
    change(lock)
    write_lock(rel, lock)
    with pytest.raises(LockError, match=message):
        open_release(rel)
    result = CliRunner().invoke(main, ["verify", str(rel)])
    assert result.exit_code == 1 and message.split()[0] in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("bad", ["../outside/x.parquet", "/etc/passwd", "data/../../x", "C:/x.parquet",
                                 "data\\frames\\x.parquet", "data/frames/x\0.parquet", "", "./data/x", ".git/config",
                                 "a/.cache/huggingface/x", "notes*", "x[1].json", "data//x.parquet"])
def test_paths_are_data_not_trust(bad):
    with pytest.raises(UnsafePathError):
        safe_relpath(bad)
    assert safe_relpath("data/frames/pocus/fold0-00000-of-00001.parquet")


def test_a_link_cannot_lead_out_of_the_release(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "data").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePathError, match="outside"):
        inside(tmp_path / "rel", "data/x.parquet")


def test_names_and_commits_from_servers_are_checked():
    for bad in ("../x", ".hidden", "a/b", "x\0"):
        with pytest.raises(UnsafePathError):
            safe_name(bad)
    with pytest.raises(UnsafePathError):
        safe_commit("../../refs/heads/main")
    assert safe_commit("a" * 40)


def test_hostile_shard_path_with_a_matching_hash_is_refused_by_verify_and_load(phantom_pocus_release, tmp_path):
    rel = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel)
    outside = tmp_path / "outside"
    outside.mkdir()
    lock = raw_lock(rel)
    shard = lock["shards"][0]
    secret = outside / "x.parquet"
    shutil.copy(rel / shard["path"], secret)  # same bytes, so the hash matches
    shard["path"] = "../outside/x.parquet"
    write_lock(rel, lock)
    result = CliRunner().invoke(main, ["verify", str(rel)])
    assert result.exit_code == 1 and "../outside/x.parquet" in result.output and "inside its folder" in result.output
    with pytest.raises(ReleaseError, match="outside"):
        us4.load(rel)
    for name in ("../../etc/passwd", ".git/config", "notes*"):  # a publish would write, a download glob, these
        attach = raw_lock(phantom_pocus_release)
        attach["attachments"][name] = "0" * 64
        write_lock(rel, attach)
        with pytest.raises(LockError, match=re.escape(repr(name))):
            open_release(rel)


def test_the_lock_hash_follows_every_change_of_the_lock(phantom_pocus_release, tmp_path):
    from us4.release.attach import add_attachment

    rel_dir = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel_dir)
    (tmp_path / "note.txt").write_text("evidence")
    rel = add_attachment(open_release(rel_dir), tmp_path / "note.txt")
    assert rel.lock.sha256 == open_release(rel_dir).lock.sha256 != open_release(phantom_pocus_release).lock.sha256


def test_a_record_the_card_cannot_show_leaves_the_release_as_it_was(phantom_pocus_release, tmp_path):
    rel_dir = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel_dir)
    before = {p.name: p.read_bytes() for p in rel_dir.iterdir() if p.is_file()}
    (tmp_path / "benchmark.json").write_text('{"format": "us4-benchmark/1"}')
    result = CliRunner().invoke(main, ["card", str(rel_dir), "--benchmark", str(tmp_path / "benchmark.json")])
    assert result.exit_code == 1 and "not a record written by us4 benchmark" in result.output
    assert {p.name: p.read_bytes() for p in rel_dir.iterdir() if p.is_file()} == before
    assert verify_release(open_release(rel_dir)).ok


def test_loading_some_sources_needs_all_their_shards_and_only_theirs(phantom_release, tmp_path):
    rel_dir = tmp_path / "rel"
    shutil.copytree(phantom_release, rel_dir)
    lock = open_release(rel_dir).lock
    (rel_dir / next(s for s in lock.shards_of("frames") if s.source == "clust").path).unlink()
    for kwargs in ({}, {"sources": ["clust"]}, {"sources": ["butterfly", "clust"]}):
        with pytest.raises(VerificationError, match="missing"):
            us4.load(rel_dir, **kwargs)
    butterfly = us4.load(rel_dir, sources=["butterfly"])
    assert set(butterfly["train"]["source"]) == {"butterfly"}
    assert sum(len(part) for part in butterfly.values()) == sum(
        s.rows for s in lock.shards_of("frames") if s.source == "butterfly")


# --- card and Croissant: verified by hash, never re-rendered ---------------------------


def test_verify_checks_card_and_croissant_by_hash_and_never_renders(phantom_pocus_release, tmp_path, monkeypatch):
    import us4.contract.card as card

    monkeypatch.setattr(card, "render_card", lambda *a, **k: pytest.fail("verify rendered a card"))
    rel = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel)
    result = verify_release(open_release(rel))
    assert result.ok and result.checked >= len(open_release(rel).lock.shards) + 2
    for name in ("README.md", "croissant.json"):
        path = rel / name
        original = path.read_bytes()
        path.write_bytes(original.replace(b"us4", b"uS4", 1))
        problems = verify_release(open_release(rel)).problems
        assert problems == [f"{name}: sha256 differs from the one release.json records (hand-edited or stale)"]
        path.write_bytes(original)


def test_croissant_is_valid_and_reads_every_row(phantom_pocus_release):
    mlc = pytest.importorskip("mlcroissant", reason="mlcroissant is a test dependency: pip install -e '.[test]'")
    rel = open_release(phantom_pocus_release)
    doc = json.loads((phantom_pocus_release / "croissant.json").read_text())
    files = {d["contentUrl"]: d["sha256"] for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    assert files == {s.path: s.sha256 for s in rel.lock.shards}
    assert doc["version"] == rel.version and "born2021pocus" in doc["citeAs"]
    ds = mlc.Dataset(jsonld=str(phantom_pocus_release / "croissant.json"))
    frames = list(ds.records("frames"))
    assert len(frames) == rel.lock.counts.frames
    assert {r["frames/split"].decode() for r in frames} == {s.split for s in rel.lock.shards}
    assert frames[0]["frames/image"].size[0] > 0  # images decode
    videos = list(ds.records("videos"))
    assert len(videos) == rel.lock.counts.videos
    splits = list(ds.records("splits"))
    assert len(splits) == 5


def test_one_version_string():
    with open(REPO / "pyproject.toml", "rb") as f:
        assert us4.__version__ == tomllib.load(f)["project"]["version"]
    assert f"version {us4.__version__}" in CliRunner().invoke(main, ["--version"]).output


def test_every_package_ships_in_the_wheel():
    with open(REPO / "pyproject.toml", "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "us4").rglob("__init__.py")}
    assert found <= listed and {"us4.pipelines", "us4.manifests"} <= listed


# --- a release published by us4 0.1.0 --------------------------------------------------


def test_a_release_of_us4_0_1_0_verifies_and_loads(tmp_path):
    rel = open_release(FIXTURE_V1)
    assert rel.lock.source_format == FORMAT_V1 and rel.lock.environment.host["us4"] == "0.1.0"
    result = verify_release(rel)
    assert result.ok, result.problems
    assert any("records no hash of the card" in n for n in result.notes)
    out = CliRunner().invoke(main, ["verify", str(FIXTURE_V1)])
    assert out.exit_code == 0 and "not checked" in out.output and "ok:" in out.output
    ds = us4.load(FIXTURE_V1)
    assert sum(len(s) for s in ds.values()) == rel.lock.counts.frames == 12
    assert [len(c.frame_index) for c in rel.lock.clips] == [3, 3, 3, 3]
    # still tamper-evident: a changed shard is named
    copy = tmp_path / "rel"
    shutil.copytree(FIXTURE_V1, copy)
    shard = copy / rel.lock.shards[0].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any(rel.lock.shards[0].path in p for p in verify_release(open_release(copy)).problems)
    # its lock hash is the hash of the file as 0.1.0 published it, not of the upgraded model
    assert rel.lock.sha256 == hashlib.sha256(json.dumps(raw_lock(FIXTURE_V1), sort_keys=True, separators=(",", ":"),
                                                        ensure_ascii=False).encode()).hexdigest()
    for command in (["stats", str(FIXTURE_V1)], ["audit", str(FIXTURE_V1)], ["diff", str(FIXTURE_V1), str(FIXTURE_V1)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, (command, result.output)


def test_verify_reports_every_file_the_lock_does_not_name_but_not_local_state(phantom_pocus_release, tmp_path):
    rel = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel)
    (rel / "data" / "notes.txt").write_text("mine")
    (rel / ".DS_Store").write_bytes(b"\0")
    (rel / "linked").symlink_to(tmp_path)
    for state in (".us4-work/clips", ".cache/huggingface"):  # a build's cache, a download's records
        (rel / state).mkdir(parents=True)
        (rel / state / "x.arrow").write_bytes(b"pixels")
    problems = verify_release(open_release(rel)).problems
    assert problems == [f"{n}: not in the lock (stray file)" for n in (".DS_Store", "data/notes.txt", "linked")]


def test_diff_counts_frames_of_changed_added_and_removed_clips(phantom_pocus_release):
    from us4.release.diff import diff_locks

    old = open_release(phantom_pocus_release).lock
    first, second, *rest = old.clips
    changed = first.model_copy(update={"frame_sha256": ["0" * 64, *first.frame_sha256[1:]]})
    shorter = second.model_copy(update={"frame_index": second.frame_index[:-1],
                                        "frame_sha256": second.frame_sha256[:-1]})
    new = old.model_copy(update={"clips": [changed, shorter, *rest[1:]]})
    d = diff_locks(old, new)
    assert (d.frames_changed, d.frames_added, d.frames_removed) == (1, 0, 1 + len(rest[0].frame_index))
    assert [c.video_id for c in d.clips_removed] == [rest[0].video_id]
    assert d.pixels == [(first.video_id, 1, len(first.frame_index)), (second.video_id, 1, len(second.frame_index))]
    back = diff_locks(new, old)
    assert (back.frames_added, back.frames_removed) == (d.frames_removed, 0)
