"""Distribution on 127.0.0.1, against a real Hub-compatible server (olah via `us4 mirror serve`):
publish --git, serve, download + verify, load, diff, tampering, resume, tags that never
move, and the exact upload a remote Hub would receive (checked without network)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

import us4
from us4.builder import build_release
from us4.cli import main
from us4.errors import HubError, ReleaseError, VerificationError
from us4.hub._hf import hub_errors, redact
from us4.hub.download import download_release, fetch_release, staging_dir
from us4.hub.mirror import free_port, serve_mirror
from us4.hub.publish import commit_operations, publish_git, publish_hub, publish_plan
from us4.release.attach import add_attachment
from us4.release.diff import diff_locks
from us4.release.read import open_release
from us4.release.verify import verify_release

from .conftest import PIPELINES

REPO = "test/pocus-phantom"  # phantom releases go only to repositories whose name says so
BAD = "test/bad-phantom"
TOKEN = "hf_" + "S3cr3tT0kenNeverPrinted" * 2


def files_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a release folder, hidden ones included (what a round trip must
    preserve, and nothing more)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def assert_port_free(port: int) -> None:
    """Nothing listens on the port: a new server can take it (as servers do, with
    SO_REUSEADDR, which ignores the TIME_WAIT left by closed client connections)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


class CliServer:
    """`us4 mirror serve` as a user runs it: its own process, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from us4.cli import main; main()", "mirror", "serve", "--root", str(root),
             "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, **(env or {})})
        first = self.proc.stdout.readline()  # printed once the server answers (or the error)
        if "serving" not in first:
            self.stop()
            raise RuntimeError(f"us4 mirror serve did not start: {first}{self.proc.stdout.read()}")
        self.endpoint = first.split(" at ")[-1].strip()
        self.output = first

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.output += self.proc.stdout.read()
        return self.proc.returncode


def _build_v2(raw: Path, out: Path, tmp: Path) -> Path:
    """Version 2.0.0 of the phantom POCUS release (`raw` is its data/ folder): one clip gone,
    one relabelled in the metadata sheet (the sheet wins over the file name), another seed,
    fewer frames a clip."""
    data = tmp / "raw_v2" / "data"
    shutil.copytree(raw, data)
    convex = data / "pocus_videos" / "convex"
    next(p for p in sorted(convex.iterdir()) if p.name.startswith("Reg_")).unlink()
    sheet = data / "dataset_metadata.csv"
    rows = list(csv.DictReader(sheet.open()))
    for row in rows:
        if row["Filename"] == "Cov_phantom_01":
            row["Label"] = "Bacterial pneumonia"
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    recipe = yaml.safe_load((PIPELINES / "pocus.yaml").read_text())
    recipe.update(version="2.0.0", seed=recipe["seed"] + 1)
    recipe["sources"]["pocus"]["sampling"]["max_frames"] = 4
    (tmp / "pocus_v2.yaml").write_text(yaml.safe_dump(recipe))
    build_release(tmp / "pocus_v2.yaml", {"pocus": data}, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def hub(phantom_pocus_release, phantom_pocus_raw, tmp_path_factory):
    """A mirror root with REPO at the POCUS recipe's version and at 2.0.0 (phantom), and BAD whose shard was changed
    after publishing (commit amended, tag moved), served by `us4 mirror serve`."""
    tmp = tmp_path_factory.mktemp("hub")
    root = tmp / "mirror"
    v2 = _build_v2(phantom_pocus_raw, tmp / "rel_v2", tmp)
    publish_git(open_release(phantom_pocus_release), root, REPO, quiet=True)
    publish_git(open_release(v2), root, REPO, quiet=True)
    publish_git(open_release(phantom_pocus_release), root, BAD, quiet=True)
    bad = root / "datasets" / BAD
    victim = sorted(p for p in git(bad, "ls-files").split() if p.endswith(".parquet"))[0]
    tamper(bad / victim)
    git(bad, "commit", "-qam", "tamper")
    tag, tag2 = (f"v{open_release(r).version}" for r in (phantom_pocus_release, v2))
    git(bad, "tag", "-f", tag)
    server = CliServer(root)
    try:
        yield SimpleNamespace(root=root, endpoint=server.endpoint, v1=phantom_pocus_release, v2=v2, tag=tag,
                              tag2=tag2, victim=victim, tmp=tmp, server=server)
    finally:
        server.stop()


# --- the plan a remote Hub would receive (no network) ---------------------------------


def test_publish_plan_is_exactly_the_commit_a_hub_receives(phantom_pocus_release, tmp_path):
    rel_dir = copy_release(phantom_pocus_release, tmp_path / "rel")
    (rel_dir / "notes.txt").write_text("scratch file, not part of the release")
    (tmp_path / "extra.json").write_text("{}")
    rel = add_attachment(open_release(rel_dir), tmp_path / "extra.json", "extra/extra.json")
    plan = publish_plan(rel, "org/name")
    assert "extra/extra.json" in rel.lock.attachments and "assets/contact_sheet.png" in rel.lock.attachments
    expected = sorted(["README.md", "croissant.json", "release.json", *rel.lock.attachments,
                       *(s.path for s in rel.lock.shards)])
    assert plan.paths == expected
    assert plan.tag == f"v{rel.version}" and plan.tag.endswith("-phantom")
    assert rel.lock.name in plan.title and rel.version in plan.title

    ops = commit_operations(plan, existing=[".gitattributes", "README.md", "data/frames/fold9-00000-of-00001.parquet"])
    adds = [(op.path_in_repo, op.path_or_fileobj) for op in ops if type(op).__name__ == "CommitOperationAdd"]
    deletes = [op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationDelete"]
    assert adds == [(p, str(rel_dir / p)) for p in expected]
    assert deletes == ["data/frames/fold9-00000-of-00001.parquet"]  # the Hub's own .gitattributes stays

    # the CLI's dry run lists the same, and touches no network (the endpoint is a closed port)
    result = CliRunner().invoke(main, ["publish", str(rel_dir), "--repo", "org/name", "--dry-run",
                                       "--endpoint", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines[:-2]] == expected
    assert lines[-1] == f"tag: {plan.tag}"


def test_publish_refuses_an_unverified_release(phantom_pocus_release, tmp_path):
    rel_dir = copy_release(phantom_pocus_release, tmp_path / "rel")
    shard = open_release(rel_dir).lock.shards[0].path
    tamper(rel_dir / shard)
    with pytest.raises(VerificationError, match=Path(shard).name):
        publish_git(open_release(rel_dir), tmp_path / "mirror", "org/name-phantom", quiet=True)
    assert not (tmp_path / "mirror").exists()


@pytest.fixture(scope="module")
def other_data(phantom_pocus_raw, tmp_path_factory) -> Path:
    """The phantom POCUS release rebuilt under the same version with another seed: other folds, other data
    (read-only)."""
    tmp = tmp_path_factory.mktemp("reseeded")
    recipe = yaml.safe_load((PIPELINES / "pocus.yaml").read_text())
    recipe["seed"] += 1
    (tmp / "reseeded.yaml").write_text(yaml.safe_dump(recipe))
    build_release(tmp / "reseeded.yaml", {"pocus": phantom_pocus_raw}, tmp / "reseeded", workers=2, progress=False)
    return tmp / "reseeded"


def test_publish_git_layout_idempotence_and_tag_that_never_moves(phantom_pocus_release, other_data, tmp_path):
    root = tmp_path / "mirror"
    repo_id = "org/name-phantom"
    first = publish_git(open_release(phantom_pocus_release), root, repo_id, quiet=True)
    repo = root / "datasets" / "org" / "name-phantom"
    tag = first.tag
    assert first.created and Path(first.where) == repo and tag == f"v{open_release(phantom_pocus_release).version}"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "rev-parse", f"{tag}^{{commit}}") == first.commit
    assert sorted(git(repo, "ls-files").split()) == publish_plan(open_release(phantom_pocus_release), repo_id).paths

    again = publish_git(open_release(phantom_pocus_release), root, repo_id, quiet=True)
    assert (again.created, again.commit) == (False, first.commit)

    with pytest.raises(HubError, match="never moved"):
        publish_git(open_release(other_data), root, repo_id, quiet=True)
    assert git(repo, "rev-parse", f"{tag}^{{commit}}") == first.commit
    assert git(repo, "status", "--porcelain") == ""


def test_a_phantom_release_is_never_published_as_real_data(phantom_pocus_release, tmp_path):
    rel = open_release(phantom_pocus_release)
    assert rel.lock.phantom and rel.name == "pocus-phantom"
    with pytest.raises(HubError, match="phantom"):
        publish_git(rel, tmp_path / "mirror", "org/pocus", quiet=True)
    assert not (tmp_path / "mirror" / "datasets" / "org" / "pocus").exists()
    result = CliRunner().invoke(main, ["publish", str(phantom_pocus_release), "--git", str(tmp_path / "mirror"),
                                       "--repo", "org/pocus", "--force", "-q"])
    assert result.exit_code == 0, result.output


def test_evidence_joins_a_published_version_without_moving_its_tag(hub, phantom_pocus_release, tmp_path, monkeypatch):
    """A benchmark attached after publishing: a new commit with the same data files, tagged
    vVERSION+evidence.1; vVERSION still names the data as first published; both download (from the
    module's server: it serves repositories that appear under its root)."""
    root = hub.root
    repo_id = "org/evidence-phantom"
    first = publish_git(open_release(phantom_pocus_release), root, repo_id, quiet=True)
    rel_dir = copy_release(phantom_pocus_release, tmp_path / "rel")
    shutil.copyfile(Path(__file__).parent / "fixtures" / "benchmark-0.2.0.json", tmp_path / "benchmark.json")
    import us4.contract.card as card

    monkeypatch.setattr(card, "benchmark_markdown", lambda record: "## Benchmark\n\nevidence\n")
    rel = add_attachment(open_release(rel_dir), tmp_path / "benchmark.json")
    assert rel.lock.data_sha256() == open_release(phantom_pocus_release).lock.data_sha256()
    evidence = publish_git(rel, root, repo_id, quiet=True)
    assert evidence.created and evidence.evidence and evidence.tag == f"{first.tag}+evidence.1"
    repo = root / "datasets" / "org" / "evidence-phantom"
    assert git(repo, "rev-parse", f"{first.tag}^{{commit}}") == first.commit  # the data tag did not move
    assert git(repo, "rev-parse", "main") == evidence.commit
    changed = set(git(repo, "diff", "--name-only", first.commit, evidence.commit).split())
    assert {"README.md", "benchmark.json", "release.json"} <= changed and not any(c.startswith("data/") for c in changed)
    assert publish_git(rel, root, repo_id, quiet=True).created is False  # again: nothing new
    data = download_release(repo_id, first.tag, tmp_path / "data", endpoint=hub.endpoint, quiet=True)
    with_evidence = download_release(repo_id, evidence.tag, tmp_path / "ev", endpoint=hub.endpoint, quiet=True)
    assert files_digest(data.path) == files_digest(phantom_pocus_release)  # the data as first published
    assert not (data.path / "benchmark.json").exists() and (with_evidence.path / "benchmark.json").is_file()
    shards = [s.path for s in rel.lock.shards]
    assert {p: files_digest(data.path)[p] for p in shards} == {p: files_digest(with_evidence.path)[p] for p in shards}


def test_hub_publish_checks_an_existing_tag_over_http(hub, other_data):
    """The Hub path asks the server what the tag holds before sending anything: the same
    content is a no-op, other data a refusal (olah answers refs and trees; it takes no uploads)."""
    same = publish_hub(open_release(hub.v1), REPO, endpoint=hub.endpoint, token=TOKEN, quiet=True)
    assert not same.created
    assert same.commit == git(hub.root / "datasets" / REPO, "rev-parse", f"{same.tag}^{{commit}}")
    with pytest.raises(HubError, match="already holds other data") as err:
        publish_hub(open_release(other_data), REPO, endpoint=hub.endpoint, token=TOKEN, quiet=True)
    assert TOKEN not in str(err.value)


# --- round trip through the server ---------------------------------------------


def _roundtrip(release_dir: Path, repo: str, endpoint: str, tmp: Path) -> None:
    """us4 download and plain datasets.load_dataset (HF_ENDPOINT) give the release's bytes."""
    out = tmp / "download"
    tag = f"v{open_release(release_dir).version}"
    result = CliRunner().invoke(main, ["download", repo, "--revision", tag, "--out", str(out),
                                       "--endpoint", endpoint, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert files_digest(out) == files_digest(release_dir)
    assert not staging_dir(out).exists()

    # a stock client in a fresh process, pointed at the mirror by HF_ENDPOINT only
    code = (
        "import datasets, hashlib, json\n"
        f"ds = datasets.load_dataset({repo!r}, 'frames', revision={tag!r})\n"
        "out = {}\n"
        "for split, d in ds.items():\n"
        "    first = d[0]['image']\n"
        "    raw = d.cast_column('image', datasets.Image(decode=False))\n"
        "    h = hashlib.sha256()\n"
        "    for row in raw: h.update(row['image']['bytes'])\n"
        "    out[split] = [len(d), type(first).__module__, h.hexdigest()]\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp / "hf_home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    rel = open_release(release_dir)
    for split in sorted({s.split for s in rel.shards("frames")}):
        h = hashlib.sha256()
        for shard in (s for s in rel.shards("frames") if s.split == split):
            for image in pq.read_table(release_dir / shard.path, columns=["image"])["image"].to_pylist():
                h.update(image["bytes"])
        rows = sum(s.rows for s in rel.shards("frames") if s.split == split)
        assert got[split] == [rows, "PIL.PngImagePlugin", h.hexdigest()], split


def test_roundtrip_phantom_release(hub, tmp_path):
    _roundtrip(hub.v1, REPO, hub.endpoint, tmp_path)


@pytest.mark.slow
def test_roundtrip_real_pocus_sample(hub, pocus_release, tmp_path):
    # published while the server runs: the mirror serves repositories that appear under its root
    publish_git(open_release(pocus_release), hub.root, "test/pocus-sample", quiet=True)  # real data: no phantom
    _roundtrip(pocus_release, "test/pocus-sample", hub.endpoint, tmp_path)


def test_changed_file_in_served_repository_fails_download_naming_it(hub, tmp_path):
    out = tmp_path / "bad"
    result = CliRunner().invoke(main, ["download", BAD, "--revision", hub.tag, "--out", str(out),
                                       "--endpoint", hub.endpoint, "--quiet"])
    assert result.exit_code == 1
    assert Path(hub.victim).name in result.output and "modified" in result.output
    assert not out.exists() and not staging_dir(out).exists()  # nothing unverified is left anywhere


def test_download_fetches_exactly_what_the_lock_names(hub, phantom_pocus_release, tmp_path):
    """Files the repository holds beside the release (a stray shard, a note) are reported and
    left out; a verified download holds the lock's files and nothing else."""
    root = hub.root
    published = publish_git(open_release(phantom_pocus_release), root, "org/extra-phantom", quiet=True)
    repo = root / "datasets" / "org" / "extra-phantom"
    (repo / "notes.txt").write_text("not part of the release")
    (repo / "data" / "frames" / "pocus" / "fold9-00000-of-00001.parquet").write_bytes(b"stray shard")
    git(repo, "add", "--all")
    git(repo, "commit", "-qm", "extra files")
    git(repo, "tag", "-f", published.tag)
    result = CliRunner().invoke(main, ["download", "org/extra-phantom", "--revision", published.tag, "--out",
                                       str(tmp_path / "dl"), "--endpoint", hub.endpoint, "-q"])
    assert result.exit_code == 0, result.output
    assert "left out: notes.txt" in result.output and "left out: data/frames/pocus/fold9" in result.output
    assert files_digest(tmp_path / "dl") == files_digest(phantom_pocus_release)


def test_download_of_one_split_is_verified_against_the_full_lock(hub, tmp_path, monkeypatch):
    lock = open_release(hub.v1).lock
    out = tmp_path / "fold0"
    result = CliRunner().invoke(main, ["download", REPO, "--revision", hub.tag, "--split", "fold0", "--out", str(out),
                                       "--endpoint", hub.endpoint, "-q"])
    assert result.exit_code == 0, result.output
    fetched = {p for p in files_digest(out) if p.endswith(".parquet")}
    assert fetched == {s.path for s in lock.shards if s.split == "fold0"} and fetched
    assert verify_release(open_release(out), expect=open_release(out).lock.files(splits=["fold0"])).ok
    assert not verify_release(open_release(out)).ok  # as a whole release, the other folds are missing
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    ds = us4.load(out, verify=False)
    assert sorted(ds) == ["fold0"]
    assert len(ds["fold0"]) == sum(s.rows for s in lock.shards if s.split == "fold0" and s.config == "frames")
    bad = CliRunner().invoke(main, ["download", REPO, "--revision", hub.tag, "--source", "clust", "--out",
                                    str(tmp_path / "x"), "--endpoint", hub.endpoint])
    assert bad.exit_code == 1 and "no source clust" in bad.output and "its sources: pocus" in bad.output
    assert not (tmp_path / "x").exists() and not staging_dir(tmp_path / "x").exists()


def test_a_hostile_lock_on_a_server_is_refused_before_anything_is_fetched(hub, phantom_pocus_release, tmp_path):
    root = hub.root
    rel_dir = copy_release(phantom_pocus_release, tmp_path / "rel")
    lock = json.loads((rel_dir / "release.json").read_text())
    lock["shards"][0]["path"] = "../../../outside.parquet"
    (rel_dir / "release.json").write_text(json.dumps(lock, indent=1, sort_keys=True))
    repo = root / "datasets" / "org" / "hostile-phantom"
    repo.mkdir(parents=True)
    shutil.copytree(rel_dir, repo, dirs_exist_ok=True, )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "--all")
    git(repo, "commit", "-qm", "hostile")
    git(repo, "tag", "v1.0.0")
    result = CliRunner().invoke(main, ["download", "org/hostile-phantom", "--revision", "v1.0.0", "--out",
                                       str(tmp_path / "dl" / "x"), "--endpoint", hub.endpoint])
    with pytest.raises(ReleaseError, match="outside.parquet"):
        us4.load("org/hostile-phantom", revision="v1.0.0", endpoint=hub.endpoint)
    assert result.exit_code == 1 and "../../../outside.parquet" in result.output
    assert not (tmp_path / "dl" / "x").exists() and not list(tmp_path.rglob("outside.parquet"))
    with pytest.raises(ReleaseError):
        publish_git(open_release(rel_dir), tmp_path / "m2", "org/again-phantom", quiet=True)


def test_two_versions_stay_downloadable_and_diff_between_them(hub, tmp_path):
    for tag, source in ((hub.tag, hub.v1), (hub.tag2, hub.v2)):
        got = download_release(REPO, tag, tmp_path / tag, endpoint=hub.endpoint, quiet=True)
        assert files_digest(got.path) == files_digest(source)

    result = CliRunner().invoke(main, ["diff", f"{REPO}@{hub.tag}", f"{REPO}@{hub.tag2}", "--endpoint", hub.endpoint,
                                       "--json"], env={"US4_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    remote = json.loads(result.output)
    local = diff_locks(open_release(hub.v1).lock, open_release(hub.v2).lock).to_dict()
    assert remote == local
    # only the locks were fetched for the diff: no shard of either revision is in the cache
    assert not list((tmp_path / "cache").rglob("*.parquet"))

    # what the diff must say, from the two releases' tables read independently
    def frames(d: Path) -> set[tuple[str, int]]:
        t = open_release(d).frames(["video_id", "frame_index"]).to_pylist()
        return {(r["video_id"], r["frame_index"]) for r in t}

    def videos(d: Path) -> dict[str, dict]:
        return {r["video_id"]: r for r in open_release(d).videos(["video_id", "label", "split"]).to_pylist()}

    va, vb = videos(hub.v1), videos(hub.v2)
    assert [c["video_id"] for c in local["clips_removed"]] == sorted(set(va) - set(vb))
    assert len(local["clips_removed"]) == 1 and local["clips_added"] == []
    assert local["frames_added"] == len(frames(hub.v2) - frames(hub.v1))
    assert local["frames_removed"] == len(frames(hub.v1) - frames(hub.v2)) > 0
    assert local["labels_changed"] == [[v, va[v]["label"], vb[v]["label"]] for v in sorted(set(va) & set(vb))
                                       if va[v]["label"] != vb[v]["label"]]
    relabelled = next(v for v in va if Path(v).stem == "Cov_phantom_01")
    assert local["labels_changed"] == [[relabelled, "covid", "pneumonia"]]
    assert local["moved_between_splits"] == [[v, va[v]["split"], vb[v]["split"]] for v in sorted(set(va) & set(vb))
                                             if va[v]["split"] != vb[v]["split"]]
    assert local["moved_between_splits"]  # 2.0.0 changed the seed: some videos moved folds
    assert list(local["recipes_changed"]) == ["pocus"] and "sampling" in local["recipes_changed"]["pocus"][0]
    assert any(c.startswith("seed:") for c in local["recipe_shared_changed"])
    assert diff_locks(open_release(hub.v1).lock, open_release(hub.v1).lock).empty


def test_us4_load_hub_revision_and_folder(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("US4_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    ds = us4.load(REPO, revision=hub.tag2, config="frames", endpoint=hub.endpoint)
    lock = open_release(hub.v2).lock
    assert sorted(ds) == sorted({s.split for s in lock.shards})
    assert sum(len(d) for d in ds.values()) == lock.counts.frames
    image = next(iter(ds.values()))[0]["image"]
    assert image.mode in ("L", "RGB") and image.size[0] > 0
    # cached per commit: a second load does not download again (it re-verifies the cached copy)
    assert not fetch_release(REPO, hub.tag2, endpoint=hub.endpoint, quiet=True).verified

    videos = us4.load(str(hub.v1), config="videos", split="fold0")
    assert len(videos) == sum(s.rows for s in open_release(hub.v1).shards("videos") if s.split == "fold0")


def test_download_resumes_from_an_interrupted_run(hub, tmp_path):
    from huggingface_hub import snapshot_download

    out = tmp_path / "resumed"
    staging = staging_dir(out)
    # what an interrupted run leaves: some files fetched, plus one that this revision lacks
    snapshot_download(REPO, repo_type="dataset", revision=hub.tag, local_dir=staging, endpoint=hub.endpoint,
                      allow_patterns=["release.json", "data/frames/pocus/fold0-*"])
    kept = {p: (staging / p).stat().st_ino
            for p in ("release.json", "data/frames/pocus/fold0-00000-of-00001.parquet")}
    (staging / "data" / "frames" / "pocus" / "stale-00000-of-00001.parquet").write_bytes(b"from another revision")
    got = download_release(REPO, hub.tag, out, endpoint=hub.endpoint, quiet=True)
    assert files_digest(got.path) == files_digest(hub.v1)
    assert {p: (out / p).stat().st_ino for p in kept} == kept  # not fetched again


def test_download_errors_are_one_clear_line(hub, tmp_path):
    runner = CliRunner()
    cases = {
        ("test/nope", hub.tag): "no such dataset repository",
        (REPO, "v9.9.9"): f"no such revision; the repository's tags: {hub.tag}, {hub.tag2}",
    }
    for (repo, rev), message in cases.items():
        result = runner.invoke(main, ["download", repo, "--revision", rev, "--out", str(tmp_path / "x"),
                                      "--endpoint", hub.endpoint])
        assert result.exit_code == 1 and message in result.output, result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = runner.invoke(main, ["download", REPO, "--revision", hub.tag, "--out", str(tmp_path / "full"),
                                  "--endpoint", hub.endpoint])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    result = runner.invoke(main, ["download", REPO, "--revision", hub.tag, "--out", str(tmp_path / "y"),
                                  "--endpoint", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_token_never_printed(hub, tmp_path):
    runner = CliRunner()
    env = {"HF_TOKEN": TOKEN}
    outputs = [
        runner.invoke(main, ["publish", str(hub.v1), "--git", str(tmp_path / "m"), "--repo", "org/t-phantom"], env=env),
        runner.invoke(main, ["download", REPO, "--revision", hub.tag, "--out", str(tmp_path / "d"),
                             "--endpoint", hub.endpoint], env=env),
        runner.invoke(main, ["download", BAD, "--revision", hub.tag, "--out", str(tmp_path / "b"),
                             "--endpoint", hub.endpoint], env=env),
    ]
    assert [r.exit_code for r in outputs] == [0, 0, 1]
    server = CliServer(tmp_path / "m", env=env)
    server.stop()
    for text in [r.output for r in outputs] + [server.output]:
        assert TOKEN not in text
    # whatever a library puts in an exception, the one line shown has the token masked
    with pytest.raises(HubError) as err, hub_errors("org/t", TOKEN):
        raise OSError(f"connection failed, Authorization: Bearer {TOKEN}")
    assert TOKEN not in str(err.value) and "***" in str(err.value)
    assert redact("token hf_abcdefghijklmnop here") == "token hf_*** here"


# --- the mirror server's life -------------------------------------------------------


def test_mirror_ctrl_c_stops_server_and_children_and_frees_the_port(hub):
    server = CliServer(hub.root)
    try:
        children = server.children()
        assert children, "olah should run as a child of us4 mirror serve"
    finally:
        assert server.stop() == 0
    assert "stopping" in server.output
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert_port_free(server.port)


def test_mirror_refuses_a_root_without_repositories(tmp_path):
    (tmp_path / "datasets" / "org" / "not-a-repo").mkdir(parents=True)
    result = CliRunner().invoke(main, ["mirror", "serve", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "no repositories to serve" in result.output


def test_serve_mirror_context_stops_even_when_the_block_fails(hub):
    with pytest.raises(RuntimeError), serve_mirror(hub.root) as endpoint:
        port = int(endpoint.rsplit(":", 1)[1])
        raise RuntimeError("test body failed")
    assert_port_free(port)
