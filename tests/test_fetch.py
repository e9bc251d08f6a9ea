"""`us4 fetch` against real servers on 127.0.0.1: a git repository made from a few BLUES clips
(../shared/blues), reached as a file:// URL and through `git daemon` (git://), and the same
repository served as a Hub dataset repository by olah (`us4 mirror serve`). The manifest is
a release built here from those clips with a recipe that pins the repository."""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from us4 import fetch as fetch_module
from us4.builder import build_release
from us4.cli import main
from us4.contract.lock import LOCK_NAME
from us4.errors import RecipeError, StorageError
from us4.fetch import RECORD, STAGING, fetch_source
from us4.hashing import sha256_json
from us4.hub.mirror import free_port, serve_mirror
from us4.recipe import load_recipe, parse_recipe
from us4.release.read import open_release, read_lock_ref
from us4.release.verify import REPRODUCED, compare_to_manifest

from .conftest import REPO, as_in_a_terminal, flip_byte, pocus_sample_or_skip

pytestmark = pytest.mark.slow  # end-to-end (git daemon and olah serving real repositories): python -m pytest -m slow

BLUES = REPO.parent / "shared" / "blues"
SOURCE = "bluesmini"
HUB_REPO = f"test/{SOURCE}"
N_CLIPS = 8
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 123456\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def digest(root: Path, skip_hidden: bool = True) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
            and not (skip_hidden and any(part.startswith(".") for part in p.relative_to(root).parts))}


def us4(*args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process."""
    return subprocess.run([sys.executable, "-c", "from us4.cli import main; main()", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, **popen)


def write_recipe(path: Path, fetch: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "name": SOURCE, "version": "0.0.1", "description": "a few BLUES clips, for the fetch tests", "seed": 1,
        "sources": {SOURCE: {"organ": "lung", "probe": "convex", "classes": ["covid", "negative"],
                             "label": {"sheet": "labels.csv", "key": "path", "column": "label"},
                             "sampling": {"every_n": 40, "max_frames": 2}, "crop": "none", "text": "off",
                             "fetch": fetch}},
        "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5}}))
    return path


@pytest.fixture(scope="session")
def blues(tmp_path_factory):
    """The raw folder (a few BLUES clips as their authors publish them, a label sheet), a git
    repository of it (commit `good`; on top, `bad`: one clip changed, the sheet changed, a file
    added; then `pointer`: another clip replaced by a Git LFS pointer), the release built from
    it (the manifest), and recipes pinning the repository by git and on the Hub."""
    if not (BLUES / "lus_videos").is_dir():
        pytest.skip(f"BLUES not present: put COVID-BLUES as its authors publish it (lus_videos/, the sheets) at {BLUES}")
    tmp = tmp_path_factory.mktemp("fetch")
    raw = tmp / "raw"
    (raw / "lus_videos").mkdir(parents=True)
    clips = sorted((BLUES / "lus_videos").glob("*.mp4"))[:N_CLIPS]
    for clip in clips:
        shutil.copyfile(clip, raw / "lus_videos" / clip.name)
    for name in ("README.md", "LICENSE", "clinical_variables.csv", "severity.csv"):
        shutil.copyfile(BLUES / name, raw / name)
    with open(raw / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [(f"lus_videos/{c.name}", ("covid", "negative")[i % 2])
                                                       for i, c in enumerate(clips)])
    # the repository: ORG/NAME under a mirror root, as olah serves it and git daemon exports it
    root = tmp / "mirror"
    repo = root / "datasets" / HUB_REPO
    shutil.copytree(raw, repo)
    git(repo, "init", "-q", "-b", "main")
    os.symlink("../../../../etc/hostname", repo / "LINK.md")  # a link leading out: neither followed nor kept
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "good")
    good = git(repo, "rev-parse", "HEAD")
    flip_byte(repo / "lus_videos" / clips[0].name)
    (repo / "labels.csv").write_text((repo / "labels.csv").read_text().replace("covid", "negative", 1))
    (repo / "notes.txt").write_text("added later\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "bad")
    bad = git(repo, "rev-parse", "HEAD")
    # (olah cannot serve a pointer whose file it lacks: the Hub's commits stop at `bad`)
    (repo / "lus_videos" / clips[1].name).write_text(LFS_POINTER.format("0" * 64))
    git(repo, "commit", "-qam", "pointer")
    pointer = git(repo, "rev-parse", "HEAD")
    url = f"file://{repo}"
    recipe = write_recipe(tmp / "git.yaml", {"git": url, "commit": good})
    hub_recipe = write_recipe(tmp / "hub.yaml", {"hub": HUB_REPO, "commit": good})
    release = tmp / "release"
    build_release(recipe, {SOURCE: raw}, release, workers=2, progress=False)
    return SimpleNamespace(raw=raw, root=root, repo=repo, url=url, good=good, bad=bad, pointer=pointer, clips=clips, tmp=tmp,
                           recipe=recipe, hub_recipe=hub_recipe, release=release, manifest=release / LOCK_NAME)


@pytest.fixture(scope="session")
def git_daemon(blues):
    """`git daemon` exporting the repository as git://127.0.0.1:PORT/bluesmini."""
    port = free_port()
    base = blues.root / "datasets" / "test"
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("git daemon did not start")
            time.sleep(0.05)
    try:
        yield f"git://127.0.0.1:{port}/{SOURCE}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def hub_endpoint(blues):
    with serve_mirror(blues.root) as endpoint:
        yield endpoint


def fetch_args(blues, out: Path, *extra: str, hub: bool = False) -> list[str]:
    return ["fetch", SOURCE, "--recipe", str(blues.hub_recipe if hub else blues.recipe), "--manifest",
            str(blues.manifest), "--out", str(out), *extra]


def assert_fetched(blues, out: Path) -> None:
    """Every file of the raw folder, byte for byte, and nothing of the staging left."""
    got = digest(out)
    want = digest(blues.raw)
    assert {k: got.get(k) for k in want} == want
    assert not (out / STAGING).exists() and (out / RECORD).is_file()


# --- the pin in the recipe ---------------------------------------------------------------

def test_the_pin_is_typed_and_recorded_in_the_lock_yet_decides_no_verdict(blues):
    lock = open_release(blues.release).lock
    assert lock.recipe.sources[SOURCE].fetch.to_dict() == {"git": blues.url, "commit": blues.good, "folder": ".",
                                                       "clips": ".", "verify": ["clips", "sheets"]}
    # a manifest built before the source had a pin is reproduced by a build that has one
    recipe = lock.recipe.to_dict()
    del recipe["sources"][SOURCE]["fetch"]
    earlier = lock.model_copy(update={"recipe": parse_recipe(recipe), "recipe_sha256": sha256_json(recipe)})
    assert compare_to_manifest(lock, earlier).verdict == REPRODUCED
    # the shipped POCUS pin: folder data/ (what --raw names), clip ids relative to data/pocus_videos
    pin = load_recipe("pocus").sources["pocus"].fetch
    assert (pin.git, pin.commit) == ("https://github.com/jannisborn/covid19_ultrasound",
                                     "bed269a62275ff39d58c7c9e9a92405db5f7f6d6")
    assert (pin.folder, pin.clips, pin.verify) == ("data", "data/pocus_videos", ("clips",))


@pytest.mark.parametrize("fetch, message", [
    ({"git": "ext::sh -c touch% /tmp/x", "commit": "a" * 40}, "git must be an https://"),
    ({"git": "https://example.org/r.git", "commit": "main"}, "not a 40-character hexadecimal commit id"),
    ({"git": "https://example.org/r.git", "hub": "a/b", "commit": "a" * 40}, "must be {git: URL, commit: SHA}"),
    ({"hub": "a/../b", "commit": "a" * 40}, "hub names a dataset repository as ORG/NAME"),
    ({"git": "https://example.org/r.git", "commit": "a" * 40, "folder": "../up"}, "starts with a dot"),
    ({"git": "https://example.org/r.git", "commit": "a" * 40, "verify": ["frames"]}, "verify lists"),
    ({"git": "https://example.org/r.git", "commit": "a" * 40, "branch": "main"}, "unknown keys ['branch']"),
])
def test_a_bad_pin_is_one_line_naming_the_source(fetch, message, tmp_path):
    raw = yaml.safe_load(write_recipe(tmp_path / "r.yaml", fetch).read_text())
    with pytest.raises(RecipeError, match=f"source '{SOURCE}': fetch: ") as caught:
        parse_recipe(raw)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# --- fetches that succeed ----------------------------------------------------------------

def test_fetch_by_file_url_keeps_the_commit_and_rebuilds_the_manifest(blues, tmp_path):
    out = tmp_path / "fetched"
    result = us4(*fetch_args(blues, out, "-q"))
    assert result.returncode == 0, result.stderr
    assert_fetched(blues, out)
    assert not (out / "LINK.md").exists() and not (out / "LINK.md").is_symlink()
    assert f"fetched {SOURCE}: commit {blues.good[:12]} of {blues.url}: {N_CLIPS + 1} files verified" in result.stdout
    unverified = {line.split(": ", 1)[1] for line in result.stderr.splitlines() if line.startswith("unverified: ")}
    assert unverified == {"README.md", "LICENSE", "clinical_variables.csv", "severity.csv"}
    assert "left out: LINK.md: a link, not followed" in result.stderr
    record = json.loads((out / RECORD).read_text())
    assert record["commit"] == blues.good and len(record["verified"]) == N_CLIPS + 1 and not record["problems"]
    # what was fetched rebuilds the release the manifest describes
    rebuilt = tmp_path / "rebuilt"
    build_release(blues.recipe, {SOURCE: out}, rebuilt, workers=2, progress=False)
    assert compare_to_manifest(open_release(rebuilt).lock, read_lock_ref(blues.manifest)[0]).verdict == REPRODUCED


def test_fetch_over_git_daemon_shows_progress(blues, git_daemon, tmp_path):
    out = tmp_path / "fetched"
    result = us4(*fetch_args(blues, out, "--from", git_daemon))
    assert result.returncode == 0, result.stderr
    assert_fetched(blues, out)
    assert "Receiving objects: 100%" in result.stderr and "verifying: 100%" in result.stderr  # git's, then ours
    assert f"commit {blues.good[:12]} of {git_daemon}:" in result.stdout


def test_fetch_from_a_hub_mirror(blues, hub_endpoint, tmp_path):
    out = tmp_path / "fetched"
    result = us4(*fetch_args(blues, out, "-q", hub=True), env={"HF_ENDPOINT": hub_endpoint})
    assert result.returncode == 0, result.stderr
    assert_fetched(blues, out)
    assert f"commit {blues.good[:12]} of {HUB_REPO} at {hub_endpoint}: {N_CLIPS + 1} files verified" in result.stdout


# --- files that differ, and what is kept ---------------------------------------------------

@pytest.mark.parametrize("transport", ["git", "hub"])
def test_files_that_differ_are_named_and_not_kept_and_a_rerun_finishes(blues, hub_endpoint, transport, tmp_path):
    out = tmp_path / "fetched"
    hub = transport == "hub"
    where = ["--from", hub_endpoint] if hub else []
    commit = blues.bad if hub else blues.pointer
    result = us4(*fetch_args(blues, out, "-q", "--revision", commit, *where, hub=hub))
    assert result.returncode == 1, result.stderr
    changed, pointer = (f"lus_videos/{c.name}" for c in blues.clips[:2])
    differ = ["labels.csv", changed] + ([] if hub else [pointer])
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert [p.split(":")[0] for p in problems] == differ
    assert hub or problems[2] == f"{pointer}: a Git LFS pointer, not the file (the repository keeps it in Git LFS); not kept"
    assert "the manifest says" in problems[0] and problems[1].endswith("not kept")
    assert (f"us4: error: {SOURCE}: commit {commit[:12]} of {HUB_REPO + ' at ' + hub_endpoint if hub else blues.url} "
            f"fails manifest {SOURCE} 0.0.1 on {len(differ)} files, none kept; first: labels.csv: ") in result.stderr
    assert "unverified: notes.txt" in result.stderr
    # nothing that differs is kept, not even in the staging folder; the rest is there
    for rel in differ:
        assert not (out / rel).exists()
        assert not any(p.name == Path(rel).name for p in (out / STAGING).rglob("*") if ".git" not in p.parts)
    assert (out / "notes.txt").is_file() and (out / f"lus_videos/{blues.clips[2].name}").is_file()
    # the good commit, into the same folder: the files of the bad one that it lacks go
    result = us4(*fetch_args(blues, out, "-q", *where, hub=transport == "hub"))
    assert result.returncode == 0, result.stderr
    assert_fetched(blues, out)
    assert not (out / "notes.txt").exists()


def test_a_pin_that_checks_clips_only_keeps_a_differing_sheet_as_unverified(blues, tmp_path):
    """As POCUS's pin does: the sheet at the commit is not the manifest's, and says so."""
    raw = yaml.safe_load(blues.recipe.read_text())
    raw["sources"][SOURCE]["fetch"]["verify"] = ["clips"]
    recipe = tmp_path / "clips-only.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    done = fetch_source(SOURCE, tmp_path / "out", recipe=recipe, manifest=blues.manifest, revision=blues.bad, quiet=True)
    assert [p.split(":")[0] for p in done.problems] == [f"lus_videos/{blues.clips[0].name}"]
    assert done.unchecked == ["labels.csv (differs from the manifest's; the recipe's pin checks clips only)"]
    assert (tmp_path / "out" / "labels.csv").read_bytes() == (blues.repo / "labels.csv").read_bytes()


def test_the_pocus_pin_checks_the_shipped_manifests_clips(tmp_path):
    """The shipped POCUS recipe and manifest, against a repository laid out as the public one
    (data/pocus_videos/..., data/dataset_metadata.csv) holding the project's sample."""
    sample = pocus_sample_or_skip()
    repo = tmp_path / "covid19_ultrasound"
    shutil.copytree(sample, repo / "data")
    (repo / "README.md").write_text("the repository's other files\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sample")
    out = tmp_path / "fetched"
    result = us4("fetch", "pocus", "--from", f"file://{repo}", "--revision", "main", "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = read_lock_ref(f"pocus-{load_recipe('pocus').version}")[0]
    # the sample's own sheet is the one the manifest names: verified too (another copy would be kept, unverified)
    assert [s.path for s in manifest.sheets] == ["dataset_metadata.csv"]
    assert f"{len(manifest.clips) + 1} files verified against manifest pocus {manifest.version}" in result.stdout
    assert "unverified: data/dataset_metadata.csv" not in result.stderr and "unverified: README.md" in result.stderr
    assert f"build it: us4 build pocus --raw pocus={out / 'data'}" in result.stdout
    assert digest(out / "data") == digest(sample)


def test_a_rerun_resumes_without_fetching_again(blues, tmp_path, monkeypatch):
    """Stopped while moving files into place (a full disk, raised at our own seam): the rerun
    finishes from the staged commit with the remote gone."""
    remote = tmp_path / "remote"
    git(tmp_path, "clone", "-q", "--bare", str(blues.repo), str(remote))
    out = tmp_path / "fetched"
    args = dict(recipe=blues.recipe, manifest=blues.manifest, remote=f"file://{remote}", quiet=True)
    moved = []

    def full_disk_at_the_fourth(src: Path, dst: Path) -> None:
        if len(moved) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        os.replace(src, dst)
        moved.append(dst)

    monkeypatch.setattr(fetch_module, "_move", full_disk_at_the_fourth)
    with pytest.raises(StorageError, match="no space left on device"):
        fetch_source(SOURCE, out, **args)
    monkeypatch.undo()
    assert len(moved) == 3 and (out / STAGING).is_dir()
    # a file of yours in the folder stops the rerun before any work; nothing is overwritten
    (out / "mine.txt").write_text("mine")
    result = CliRunner().invoke(main, fetch_args(blues, out, "-q", "--from", f"file://{remote}"))
    assert result.exit_code == 1 and "mine.txt is not a file an earlier fetch put there" in result.output
    (out / "mine.txt").unlink()
    shutil.rmtree(remote)
    done = fetch_source(SOURCE, out, **args)
    assert done.commit == blues.good and not done.problems
    assert_fetched(blues, out)


def test_clips_named_by_content_are_checked_by_content(blues, tmp_path):
    """A source whose ids are content hashes: its clips are found by content, wherever they
    lie; one the commit lacks (changed) is named by its hash alone."""
    raw = yaml.safe_load(blues.recipe.read_text())
    raw["sources"][SOURCE].update(ids="hash", label={"constant": "covid"})
    recipe = blues.tmp / "hashed.yaml"
    if not recipe.exists():
        recipe.write_text(yaml.safe_dump(raw))
        build_release(recipe, {SOURCE: blues.raw}, blues.tmp / "hashed", workers=2, progress=False)
    args = dict(recipe=recipe, manifest=blues.tmp / "hashed" / LOCK_NAME, quiet=True)
    done = fetch_source(SOURCE, tmp_path / "good", **args)
    assert sorted(done.verified) == [f"lus_videos/{c.name}" for c in blues.clips] and not done.problems
    changed = hashlib.sha256((blues.raw / "lus_videos" / blues.clips[0].name).read_bytes()).hexdigest()
    done = fetch_source(SOURCE, tmp_path / "bad", revision=blues.bad, **args)
    assert done.problems == [f"a clip the manifest names by its content (sha256 {changed[:12]}…): not in commit "
                             f"{blues.bad[:12]}"]
    assert f"lus_videos/{blues.clips[0].name}" in done.unverified  # another content: nothing says what it is


class Throttle:
    """A TCP proxy on 127.0.0.1 passing a server's answers on at `rate` bytes a second."""

    def __init__(self, port: int, rate: int):
        self.port, self.rate, self.sent = port, rate, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url_port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.rate), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        try:
            while data := src.recv(4096):
                dst.sendall(data)
                if rate:
                    self.sent += len(data)
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.listener.close()


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory lies in `folder` (git runs in the staging repository)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_fetch_stops_git_and_resumes(blues, git_daemon, sig, status, tmp_path):
    port = int(git_daemon.rsplit(":", 1)[1].split("/")[0])
    slow = Throttle(port, rate=100_000)
    out = tmp_path / "fetched"
    log = tmp_path / "stderr.txt"
    try:
        with open(log, "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", "from us4.cli import main; main()",
                                     *fetch_args(blues, out, "--from", f"git://127.0.0.1:{slow.url_port}/{SOURCE}")],
                                    stdout=subprocess.DEVNULL, stderr=err, preexec_fn=as_in_a_terminal)
            deadline = time.monotonic() + 60  # git's progress, shown as it comes, says the transfer runs
            while "Receiving objects" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert proc.poll() is None and "Receiving objects" in log.read_text(), log.read_text()
            proc.send_signal(sig)
            assert proc.wait(20) == status
    finally:
        slow.close()
    assert log.read_text().splitlines()[-1].startswith(f"us4: interrupted; what was fetched is kept in {out / STAGING}")
    deadline = time.monotonic() + 5  # git ended with us4: nothing runs in its folder
    while processes_in(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(out) == []
    assert not [p for p in (out / STAGING / "repo" / ".git").rglob("*.lock")]
    result = us4(*fetch_args(blues, out, "-q", "--from", git_daemon))
    assert result.returncode == 0, result.stderr
    assert_fetched(blues, out)


# --- what cannot be fetched: one line ------------------------------------------------------

def test_a_commit_the_remote_lacks_and_unreachable_remotes_are_one_line(blues, tmp_path):
    runner = CliRunner()
    port = free_port()
    cases = [
        (["--revision", "1" * 40], f"us4: error: {blues.url}: cannot fetch {'1' * 40}: fatal: "),
        (["--from", f"git://127.0.0.1:{port}/{SOURCE}"],
         f"us4: error: git://127.0.0.1:{port}/{SOURCE}: cannot fetch {blues.good}: fatal: unable to connect to 127.0.0.1"),
        (["--from", f"file://{tmp_path / 'nowhere'}"], f"us4: error: file://{tmp_path / 'nowhere'}: cannot fetch"),
        (["--revision", "--upload-pack=touch /tmp/x"], "us4: error: --revision '--upload-pack=touch /tmp/x': a commit"),
        (["--from", "ext::sh -c touch% /tmp/x"], "us4: error: --from ext::sh -c touch% /tmp/x: neither a git URL"),
    ]
    for n, (extra, line) in enumerate(cases):
        result = runner.invoke(main, fetch_args(blues, tmp_path / f"out{n}", "-q", *extra))
        assert result.exit_code == 1 and result.stderr.startswith(line), (extra, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
    result = runner.invoke(main, fetch_args(blues, tmp_path / "hub", "-q", "--from", f"http://127.0.0.1:{port}", hub=True))
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"us4: error: {HUB_REPO}@{blues.good} at http://127.0.0.1:{port}: cannot reach the Hub")
    result = runner.invoke(main, ["fetch", "pocus", "--out", str(tmp_path / "p"), "--manifest", str(blues.manifest),
                                  "--from", str(tmp_path / "none")])
    assert result.exit_code == 1 and "neither a git URL nor a local repository" in result.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = runner.invoke(main, fetch_args(blues, tmp_path / "full", "-q"))
    assert result.exit_code == 1 and "not empty" in result.stderr and (tmp_path / "full" / "keep.txt").read_text() == "mine"
