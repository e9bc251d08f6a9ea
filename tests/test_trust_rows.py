"""The lock proves the rows, not only the files: a shard rewritten and re-hashed into the lock
(relabelled rows, a blacked-out frame) and a made-up clip added to the lock fail `verify`,
`verify --manifest`, publish, download, load and benchmark, naming the first row or clip
that differs; "identical pixels" rests only on pixels decoded here."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import us4
from us4.builder import build_release
from us4.cli import main
from us4.errors import TrainError, VerificationError
from us4.hub.download import download_release
from us4.hub.mirror import serve_mirror
from us4.hub.publish import publish_git
from us4.phantom import write_phantom_clip
from us4.media.pixels import encode_png
from us4.release.read import open_release
from us4.release.verify import verify_release
from us4.train.benchmark import verified_release

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "release-0.1.0"
RECIPE = {
    "name": "rows", "version": "1.0.0", "description": "rows", "seed": 1,
    "sources": {"lungs": {"organ": "lung", "probe": "convex", "input": "video", "classes": ["cov", "pneu", "reg"],
                          "label": {"prefix": True}, "sampling": {"evenly": 5}, "crop": "auto", "text": "off"}},
    "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.4},
    "output": {"png_compress_level": 1, "shard_max_mb": 256},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A small release of six phantom clips of three classes, two splits (read-only: copy to modify)."""
    tmp = tmp_path_factory.mktemp("rows")
    for i, name in enumerate(["Cov_a.mp4", "Cov_b.mp4", "Pneu_a.mp4", "Pneu_b.mp4", "Reg_a.mp4", "Reg_b.mp4"]):
        write_phantom_clip(tmp / "raw" / name, seed=i, n_frames=12, size=(96, 80))
    (tmp / "rows.yaml").write_text(yaml.safe_dump(RECIPE))
    build_release(tmp / "rows.yaml", {"lungs": tmp / "raw"}, tmp / "A", workers=1, progress=False)
    return tmp / "A"


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".us4-work"))
    return dst


def read_lock(rel: Path) -> dict:
    return json.loads((rel / "release.json").read_text())


def write_lock(rel: Path, lock: dict) -> None:
    (rel / "release.json").write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")


def rewrite_shard(rel: Path, path: str, edit) -> None:
    """What an attacker does: change rows of a shard, write it back, put its new sha256 and size in the lock."""
    file = rel / path
    table = pq.read_table(file)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), file)
    reseal(rel, path)


def reseal(rel: Path, path: str) -> None:
    """Put a rewritten shard's sha256, size and row count in the lock."""
    file = rel / path
    lock = read_lock(rel)
    shard = next(s for s in lock["shards"] if s["path"] == path)
    shard["sha256"], shard["bytes"] = hashlib.sha256(file.read_bytes()).hexdigest(), file.stat().st_size
    shard["rows"] = pq.ParquetFile(file).metadata.num_rows
    write_lock(rel, lock)


def first_shard(rel: Path, config: str = "frames") -> str:
    return next(s["path"] for s in read_lock(rel)["shards"] if s["config"] == config)


def relabel(rows: list[dict], n: int = 5) -> None:
    for row in rows[:n]:
        row["label"] = "reg" if row["label"] != "reg" else "pneu"


def black_out(row: dict) -> None:
    shape = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"]))).shape
    row["image"] = {"bytes": encode_png(np.zeros(shape, np.uint8), 1), "path": None}


def add_made_up_clip(rel: Path) -> str:
    lock = read_lock(rel)
    fake = dict(lock["clips"][-1], video_id="lungs/zz_made_up.mp4", sha256="ab" * 32)
    lock["clips"].append(fake)
    lock["counts"]["videos"] += 1
    write_lock(rel, lock)
    return fake["video_id"]


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", *args])
    return result.exit_code, result.output


# --- the two attacks ------------------------------------------------------------------


def test_relabelled_rows_and_a_blacked_out_frame_under_a_rehashed_shard_fail(built, tmp_path):
    """Five rows relabelled, one frame blacked out, the shard's new hash in the lock: verify
    names the first relabelled row; --manifest never says the pixels match and counts the frame."""
    rel = copy(built, tmp_path / "B")
    path = first_shard(rel)
    lock = open_release(built).lock
    clip = next(c for c in lock.clips if c.row == 0 and lock.shards[c.shard].path == path)

    def edit(rows: list[dict]) -> None:
        relabel(rows)
        black_out(rows[6])

    rewrite_shard(rel, path, edit)
    code, out = verify(str(rel))
    assert code == 1
    other = "reg" if clip.label != "reg" else "pneu"
    assert out.splitlines()[0] == (f"differs: {path} row 0: label {other}, the lock says {clip.label} "
                                   f"(clip {clip.video_id}); 5 rows differ in label")
    code, out = verify(str(rel), "--manifest", str(built / "release.json"))
    assert code == 1
    assert "pixels match" not in out and "reproduced" not in out.split("verdict:")[1].splitlines()[0]
    assert "  frames with other pixels: 1" in out.splitlines()
    assert f"differs: {path} row 6: its pixels hash to" in out


def test_a_blacked_out_frame_alone_fails_deep_and_manifest(built, tmp_path):
    """Pixels changed, every hash the lock and the rows claim left as it was: the cheap check
    reads no pixels and passes; --deep and --manifest decode them and fail on that frame."""
    rel = copy(built, tmp_path / "B")
    path = first_shard(rel)
    rewrite_shard(rel, path, lambda rows: black_out(rows[3]))
    assert verify(str(rel))[0] == 0
    code, out = verify(str(rel), "--deep")
    assert code == 1 and out.startswith(f"differs: {path} row 3: its pixels hash to ")
    code, out = verify(str(rel), "--manifest", str(built / "release.json"))
    assert code == 1 and "every frame's pixels match" not in out
    assert "  frames with other pixels: 1" in out.splitlines()
    code, out = verify(str(built), "--deep")
    assert code == 0 and "the pixels of 30 frames decoded and re-hashed" in out


def test_a_made_up_clip_in_the_lock_fails_every_reader(built, tmp_path):
    """A clip added to the lock's clips with no rows: verify, --manifest, publish, download,
    us4.load and benchmark refuse the release, naming the clip."""
    rel = copy(built, tmp_path / "B")
    fake = add_made_up_clip(rel)
    named = f"clip {fake}: in release.json, no row in data/frames/lungs/validation-00000-of-00001.parquet"
    code, out = verify(str(rel))
    assert code == 1 and out.splitlines()[0] == f"differs: {named}"
    code, out = verify(str(rel), "--manifest", str(built / "release.json"))
    assert code == 1 and "reproduced plus additions" not in out and "identical pixels" not in out
    with pytest.raises(VerificationError, match=f"first: {named}"):
        publish_git(open_release(rel), tmp_path / "mirror", "org/rows", quiet=True)
    with pytest.raises(VerificationError, match=named):
        us4.load(str(rel))
    with pytest.raises(TrainError, match=named):
        verified_release(rel)
    # a server that holds it (committed by hand, as publish refuses it): the download keeps nothing
    root = tmp_path / "mirror"
    publish_git(open_release(built), root, "org/rows", quiet=True)
    repo = root / "datasets" / "org" / "rows"
    shutil.copyfile(rel / "release.json", repo / "release.json")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "made up"], cwd=repo,
                   check=True)
    with serve_mirror(root) as endpoint, pytest.raises(VerificationError, match=named):
        download_release("org/rows", "main", tmp_path / "down", endpoint=endpoint, quiet=True)
    assert not (tmp_path / "down").exists()


# --- every column the lock records ------------------------------------------------------


def test_each_recorded_column_of_both_tables_is_compared(built, tmp_path):
    """label_id (what training reads), split, frame_index, frame_sha256 in frames rows; split
    and frame_ids in videos rows; a row moved: each is named with its row and clip."""
    lock = open_release(built).lock
    frames, videos = first_shard(built), first_shard(built, "videos")
    cases = {
        "label_id": (frames, lambda rows: rows[2].update(label_id=rows[2]["label_id"] + 1)),
        "frame_index": (frames, lambda rows: rows[2].update(frame_index=rows[2]["frame_index"] + 1)),
        "frame_sha256": (frames, lambda rows: rows[2].update(frame_sha256="0" * 64)),
        "video_id": (frames, lambda rows: rows.insert(0, rows.pop(5))),
        "split": (videos, lambda rows: rows[1].update(split="validation")),
        "frame_ids": (videos, lambda rows: rows[1].update(frame_ids=rows[1]["frame_ids"][::-1])),
    }
    for column, (path, edit) in cases.items():
        rel = copy(built, tmp_path / column)
        rewrite_shard(rel, path, edit)
        problems = verify_release(open_release(rel)).problems
        row = 0 if column == "video_id" else 2 if path == frames else 1
        assert problems and problems[0].startswith(f"{path} row {row}: {column} "), (column, problems)
    # a row of another clip in a videos table, and a clip of the lock with no videos row
    rel = copy(built, tmp_path / "gone")
    gone = pq.read_table(built / videos).column("video_id")[0].as_py()
    rewrite_shard(rel, videos, lambda rows: rows[0].update(video_id="lungs/other.mp4"))
    assert verify_release(open_release(rel)).problems == [
        f"{videos} row 0: video_id lungs/other.mp4: a clip release.json does not name",
        f"clip {gone}: in release.json, no row in {videos}"]
    rel = copy(built, tmp_path / "dropped")
    rewrite_shard(rel, frames, lambda rows: rows.pop())  # the last frame of the shard's last clip
    last = max((c for c in lock.clips if lock.shards[c.shard].path == frames), key=lambda c: c.row)
    assert verify_release(open_release(rel)).problems[0] == (
        f"clip {last.video_id}: release.json places its 5 frames from row {last.row} of {frames}, which has "
        f"{last.row + 4} rows")



def test_hostile_columns_give_one_line_each(built, tmp_path):
    """A column of another type, or a thousand rows of clips the lock does not name: one line each."""
    frames, videos = first_shard(built), first_shard(built, "videos")

    def retype(path: str, column: str, values) -> Path:
        rel = copy(built, tmp_path / f"{column}-{path.split('/')[1]}")
        table = pq.read_table(rel / path)
        table = table.set_column(table.schema.get_field_index(column), column, values(table))
        pq.write_table(table, rel / path)
        reseal(rel, path)
        return rel

    rel = retype(frames, "video_id", lambda t: pa.array(range(t.num_rows), pa.int64()))
    assert verify_release(open_release(rel)).problems == [f"{frames}: column video_id is int64, not string"]
    rel = retype(frames, "image", lambda t: t.column("image").combine_chunks().field("bytes"))
    assert verify_release(open_release(rel)).ok  # the cheap check reads no image
    assert verify_release(open_release(rel), deep=True).problems == [
        f"{frames}: column image is binary, not struct<bytes: binary, path: string>"]
    rel = copy(built, tmp_path / "many")
    first_added = pq.read_metadata(built / videos).num_rows
    rewrite_shard(rel, videos, lambda rows: rows.extend(dict(rows[0], video_id=f"lungs/x{i}.mp4") for i in range(1000)))
    assert verify_release(open_release(rel)).problems == [
        f"{videos} row {first_added}: video_id lungs/x0.mp4: a clip release.json does not name; 1000 rows of no clip "
        "of this shard"]


def test_a_page_that_does_not_decode_under_a_footer_that_does_is_one_line(built, tmp_path):
    """A column's pages scrambled, the shard re-hashed into the lock: the cheap check (label) and
    the deep one (image) each name the shard as unreadable, no traceback."""
    path = first_shard(built)
    for column, deep in (("label", False), ("image", True)):
        rel = copy(built, tmp_path / column)
        chunk = next(c for c in (pq.ParquetFile(rel / path).metadata.row_group(0).column(i) for i in range(30))
                     if c.path_in_schema.split(".")[0] == column)
        data = bytearray((rel / path).read_bytes())
        for k in range(chunk.data_page_offset, chunk.data_page_offset + 8):
            data[k] ^= 0x5A
        (rel / path).write_bytes(bytes(data))
        reseal(rel, path)
        assert verify_release(open_release(rel)).ok is deep
        problems = verify_release(open_release(rel), deep=deep).problems
        assert len(problems) == 1 and problems[0].startswith(f"{path}: unreadable Parquet ("), problems

def test_format_1_release_verifies_and_its_recorded_columns_are_compared(tmp_path):
    """us4 0.1.0's release (labels not in its lock) verifies, deep too; a frame_index it records is compared."""
    assert verify(str(FIXTURE_V1), "--deep")[0] == 0
    rel = copy(FIXTURE_V1, tmp_path / "v1")
    path = first_shard(rel)
    rewrite_shard(rel, path, lambda rows: rows[1].update(frame_index=99, label="regular"))
    problems = verify_release(open_release(rel)).problems
    assert problems == [f"{path} row 1: frame_index 99, the lock says 4 (clip butterfly/Covfixture_3.gif)"]


def test_a_partial_download_checks_the_rows_that_are_here(built, tmp_path):
    rel = copy(built, tmp_path / "part")
    lock = open_release(rel).lock
    for shard in lock.shards:
        if shard.split == "validation":
            os.remove(rel / shard.path)
    assert verify_release(open_release(rel), expect=lock.files(splits=["train"])).ok
    # a clip made up in the split that is not here has no rows to check, but the lock contradicts itself
    add_made_up_clip(rel)
    assert verify_release(open_release(rel), expect=lock.files(splits=["train"])).problems == [
        "clip lungs/zz_made_up.mp4: its frame ids start at 25 in release.json, where 30 was next "
        "(frame ids overlap or leave a gap)",
        "release.json: counts say 7 videos and 30 frames; its clips are 7 with 35 frames",
        "release.json: counts.by_split_label is not the tally of its clips"]
    rel = copy(built, tmp_path / "part2")
    for shard in lock.shards:
        if shard.split == "validation":
            os.remove(rel / shard.path)
    rewrite_shard(rel, first_shard(rel), relabel)
    problems = verify_release(open_release(rel), expect=lock.files(splits=["train"])).problems
    assert len(problems) == 1 and problems[0].startswith(f"{first_shard(rel)} row 0: label ")


def test_deep_names_a_stored_image_that_does_not_decode(built, tmp_path):
    rel = copy(built, tmp_path / "B")
    path = first_shard(rel)

    def garbage(rows: list[dict]) -> None:
        for row in rows[4:7]:
            row["image"] = {"bytes": b"\x89PNG not really", "path": None}

    rewrite_shard(rel, path, garbage)
    assert verify_release(open_release(rel)).ok  # the cheap check reads no image bytes
    problems = verify_release(open_release(rel), deep=True).problems
    assert len(problems) == 1
    assert problems[0].startswith(f"{path} row 4: the image does not decode (") and problems[0].endswith(
        "; 3 frames have an image that cannot be hashed")


# --- evidence about an older version never moves main backwards ---------------------------


@pytest.fixture(scope="module")
def versions(built, tmp_path_factory) -> dict[str, Path]:
    """The release at 1.0.0 (`built`), and the same clips built again as 1.2.0 (other data)."""
    tmp = tmp_path_factory.mktemp("versions")
    (tmp / "rows.yaml").write_text(yaml.safe_dump({**RECIPE, "version": "1.2.0"}))
    build_release(tmp / "rows.yaml", {"lungs": built.parent / "raw"}, tmp / "new", workers=1, progress=False)
    return {"1.0.0": built, "1.2.0": tmp / "new"}


def with_evidence(release: Path, tmp: Path, monkeypatch) -> Path:
    """A copy of `release` with a benchmark record attached (`us4 card --benchmark`): same data."""
    import us4.contract.card as card
    from us4.release.attach import add_attachment

    rel = copy(release, tmp / f"evidence-{release.name}")
    shutil.copyfile(Path(__file__).parent / "fixtures" / "benchmark-0.2.0.json", tmp / "benchmark.json")
    monkeypatch.setattr(card, "benchmark_markdown", lambda record: "## Benchmark\n\nevidence\n")
    add_attachment(open_release(rel), tmp / "benchmark.json")
    return rel


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_evidence_for_an_older_version_goes_on_its_tag_and_main_keeps_the_newest(versions, tmp_path, monkeypatch):
    """1.0.0, then 1.2.0, then evidence for 1.0.0: the evidence commit's parent is v1.0.0, its
    tag names it, main still serves 1.2.0 (head, tree, working tree, index); evidence for
    1.2.0 then goes on main; the evidence tag downloads."""
    root, repo_id = tmp_path / "mirror", "org/rows"
    repo = root / "datasets" / "org" / "rows"
    old = publish_git(open_release(versions["1.0.0"]), root, repo_id, quiet=True)
    new = publish_git(open_release(versions["1.2.0"]), root, repo_id, quiet=True)
    assert git(repo, "rev-parse", "main") == new.commit and git(repo, "rev-parse", f"{new.commit}^") == old.commit

    attached = with_evidence(versions["1.0.0"], tmp_path, monkeypatch)
    evidence = publish_git(open_release(attached), root, repo_id, quiet=True)
    assert (evidence.tag, evidence.created, evidence.evidence, evidence.main) == ("v1.0.0+evidence.1", True, True,
                                                                                   "1.2.0")
    assert git(repo, "rev-parse", "main") == new.commit  # main did not move backwards
    assert git(repo, "rev-parse", f"{evidence.tag}^{{commit}}") == evidence.commit
    assert git(repo, "rev-parse", f"{evidence.commit}^") == old.commit
    changed = set(git(repo, "diff", "--name-only", old.commit, evidence.commit).split())
    assert {"README.md", "benchmark.json", "release.json"} <= changed
    assert not any(c.startswith("data/") for c in changed)
    assert git(repo, "status", "--porcelain") == "" and not (repo / "benchmark.json").exists()
    assert json.loads((repo / "release.json").read_text())["version"] == "1.2.0"
    again = publish_git(open_release(attached), root, repo_id, quiet=True)
    assert (again.created, again.tag, again.commit) == (False, evidence.tag, evidence.commit)

    latest = publish_git(open_release(with_evidence(versions["1.2.0"], tmp_path, monkeypatch)), root, repo_id,
                         quiet=True)
    assert (latest.tag, latest.main) == ("v1.2.0+evidence.1", None)
    assert git(repo, "rev-parse", "main") == latest.commit and git(repo, "rev-parse", f"{latest.commit}^") == new.commit
    with serve_mirror(root) as endpoint:
        got = download_release(repo_id, evidence.tag, tmp_path / "down", endpoint=endpoint, quiet=True)
    assert open_release(got.path).lock.version == "1.0.0" and (got.path / "benchmark.json").is_file()


def test_an_older_version_published_late_is_a_tag_beside_main(versions, tmp_path):
    root, repo_id = tmp_path / "mirror", "org/rows"
    repo = root / "datasets" / "org" / "rows"
    new = publish_git(open_release(versions["1.2.0"]), root, repo_id, quiet=True)
    old = publish_git(open_release(versions["1.0.0"]), root, repo_id, quiet=True)
    assert (old.tag, old.created, old.evidence, old.main) == ("v1.0.0", True, False, "1.2.0")
    assert git(repo, "rev-parse", "main") == new.commit != old.commit
    assert git(repo, "rev-parse", "v1.0.0^{commit}") == old.commit
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", old.commit).split()) == open_release(
        versions["1.0.0"]).lock.files()
    result = CliRunner().invoke(main, ["publish", str(versions["1.0.0"]), "--repo", repo_id, "--git", str(root), "-q"])
    assert result.exit_code == 0 and "already published (same content)" in result.output


def test_release_versions_order_as_semantic_versions():
    from us4.hub.publish import version_key

    ordered = ["0.9.0", "1.0.0-rc1", "1.0.0", "1.2.0-phantom", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered

