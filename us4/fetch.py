"""Fetch a public source's raw files exactly as its recipe pins them (`us4 fetch`), and keep
only what the manifest us4 ships vouches for, or does not know.

A source's recipe pins a git repository at a commit, or a Hub dataset repository at a commit
(`recipe.FetchPin`); `--from` and `--revision` name a mirror or another revision, and the
manifest's hashes are checked all the same. The commit is fetched into a staging folder
inside the destination (`DIR/.us4-fetch`: a shallow git repository and its checkout, or a
Hub snapshot), every file is hashed there, and only then moved into place:

- a file the manifest names (a clip of the source by its path, or by its content for a
  source whose ids are hashes; a sheet the build read) is kept only when its sha256 and size
  are the manifest's; one that differs (a Git LFS pointer in place of the file included) is
  named and not kept, and the fetch fails;
- a file the manifest does not name (a README, a clip the release left out), or one of a
  kind the pin does not check (`verify`), is kept and reported as unverified;
- links are neither followed nor kept.

Git runs as a child that ends with us4 (`system.run_child`): an interrupt stops it (git
removes its own temporary files) and leaves the staging folder; the next run reuses a commit
fetched before (git keeps no half-fetched pack: an interrupted transfer starts over; the Hub
client resumes per file). The checkout ignores the user's line-ending and Git LFS settings:
its bytes are the commit's, as a plain checkout on Linux gives them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from .contract.lock import Lock
from .errors import ReleaseError, Us4Error
from .escape import one_line
from .files import atomic_write, storage_errors
from .hashing import sha256_file
from .recipe import FetchPin, load_recipe
from .release.read import read_lock_ref
from .system import in_background, run_child

#: the staging folder inside --out, and the record a fetch leaves beside the files (hidden: a build skips both)
STAGING = ".us4-fetch"
RECORD = ".us4-fetch.json"
_INSTALLED = "installed.json"  # in STAGING: every file a run has moved (or may have moved) into --out
_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
_LFS_POINTER_MAX = 1024  # bytes; a pointer file is about 130
# a revision from the command line reaches git and the Hub as an argument: a name, never an option or a refspec
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]{0,254}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GIT_SCHEMES = ("https", "http", "git", "ssh", "file")
# the bytes of a checkout are the commit's, whatever the user's git does to a working tree; the pack
# is kept as it comes (progress as its bytes arrive, never a loose object per file)
_GIT_CONFIG = ("-c", "core.autocrlf=false", "-c", "filter.lfs.smudge=", "-c", "filter.lfs.process=",
               "-c", "filter.lfs.required=false", "-c", "fetch.unpackLimit=1", "-c", "advice.detachedHead=false",
               "-c", "gc.auto=0", "-c", "init.defaultBranch=main")
# where git would look for another repository than the staging one (set when us4 runs in a git hook)
_GIT_LOCATING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                 "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE")
_VIEW = re.compile(r"#view\d+$")  # a dual-view DICOM file makes clips SOURCE/PATH#viewN


class FetchError(Us4Error):
    """A fetch cannot start or go on (no pin, no manifest, an unreachable remote, a commit it lacks)."""


@dataclass(frozen=True)
class _Expected:
    sha256: str
    bytes: int | None  # None: a failed clip, or a clip of a format-1 lock
    kind: str  # clips, sheets (FetchPin.verify's words)
    checked: bool  # the pin checks this kind


@dataclass
class Fetched:
    """What a fetch found and kept. `problems` name the files that differ from the manifest
    (none of them was kept); everything else listed was moved into `out`."""

    source: str
    remote: str  # as shown: no user name or password of a URL
    revision: str
    commit: str
    out: Path
    folder: Path  # what `--raw SOURCE=` names
    manifest: str  # NAME VERSION of the lock whose hashes were checked
    verified: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # not named by the manifest
    unchecked: list[str] = field(default_factory=list)  # named, of a kind the pin does not check, and not equal
    lfs_pointers: list[str] = field(default_factory=list)  # kept, unverified: Git LFS pointers, not files
    left_out: list[str] = field(default_factory=list)  # links, and names us4 keeps for itself
    problems: list[str] = field(default_factory=list)
    bytes: int = 0  # of the files kept


def fetch_source(source: str, out: str | Path, *, recipe: str | Path | None = None, manifest: str | Path | None = None,
                 remote: str | None = None, revision: str | None = None, quiet: bool = False) -> Fetched:
    """Fetch `source`'s raw files as the recipe (default: the one us4 ships named `source`) pins
    them, or from `remote` at `revision`; check them against `manifest` (default: the manifest us4
    ships of the recipe's name and version) and move what may be kept into `out`."""
    parsed = load_recipe(recipe or source)
    spec = parsed.sources.get(source)
    if spec is None:
        raise FetchError(f"recipe {parsed.name!r} has no source {source!r} (it has: {', '.join(sorted(parsed.sources))})")
    if spec.fetch is None:
        raise FetchError(f"source {source!r} of recipe {parsed.name!r} pins no place to fetch it from (no fetch: key)")
    pin = spec.fetch
    ref = manifest or f"{parsed.name}-{parsed.version}"
    try:
        lock, _ = read_lock_ref(ref)
    except ReleaseError as exc:
        raise FetchError(f"{source}: {exc}; the fetch checks every file against it (--manifest names another)") from None
    by_path, by_content = expected_files(lock, source, spec.ids, pin)
    if revision is not None and not _REVISION.match(revision):
        raise FetchError(f"--revision {one_line(revision)!r}: a commit, tag or branch name (letters, digits, _ . / + -)")
    revision = revision or pin.commit
    if pin.git is not None:  # the remote is checked before anything is written
        stage = partial(_git_checkout, _git_remote(remote) if remote else pin.git, _shown(remote or pin.git))
    else:
        stage = partial(_hub_snapshot, pin.hub, _endpoint(remote))
    out = Path(out)
    installed = _check_out(out)
    staging = out / STAGING
    with storage_errors():
        staging.mkdir(parents=True, exist_ok=True)
    tree, commit, shown = stage(revision, staging, quiet)
    done = Fetched(source, shown, revision, commit, out, out / pin.folder, f"{lock.name} {lock.version}")
    keep, rejected = _classify(tree, commit, by_path, by_content, done, quiet)
    _install(tree, out, keep, staging, installed)
    with storage_errors():
        atomic_write(out / RECORD, json.dumps({k: str(v) if isinstance(v, Path) else v
                                                for k, v in asdict(done).items()}, indent=1).encode())
        for rel in rejected:  # nothing that failed its check stays, staged or not (a rerun checks it out again)
            (tree / rel).unlink()
        if not done.problems:
            shutil.rmtree(staging)
    return done


def expected_files(lock: Lock, source: str, ids: str, pin: FetchPin) -> tuple[dict[str, _Expected], dict[str, _Expected]]:
    """What the manifest says of the source's files: by their path in the repository (clips of
    a source whose ids are paths, sheets), and by content (clips whose ids are hashes)."""
    by_path: dict[str, _Expected] = {}
    by_content: dict[str, _Expected] = {}
    clips = [(c.video_id, c.sha256, c.bytes) for c in lock.clips if c.source == source]
    clips += [(f.video_id, f.sha256, None) for f in lock.failures if f.source == source and f.sha256]
    for video_id, sha256, size in clips:
        entry = _Expected(sha256, size, "clips", "clips" in pin.verify)
        if ids == "path":
            by_path[_join(pin.clips, _VIEW.sub("", video_id.removeprefix(f"{source}/")))] = entry
        else:
            by_content[sha256] = entry
    for sheet in lock.sheets:
        if sheet.source == source:
            by_path[_join(pin.folder, sheet.path)] = _Expected(sheet.sha256, sheet.bytes, "sheets", "sheets" in pin.verify)
    return by_path, by_content


def _join(folder: str, rel: str) -> str:
    return rel if folder == "." else f"{folder}/{rel}"


def _check_out(out: Path) -> set[str]:
    """The files an earlier, unfinished fetch moved into `out`; anything else there stops the
    fetch before any work (nothing of yours is overwritten)."""
    if out.exists() and not out.is_dir():
        raise FetchError(f"{out}: exists and is not a folder")
    if not out.is_dir():
        return set()
    staging = out / STAGING
    if not staging.is_dir():
        if (out / RECORD).is_file():
            raise FetchError(f"{out}: already holds a finished fetch (see {out / RECORD}); choose another --out")
        if any(out.iterdir()):
            raise FetchError(f"{out}: not empty; choose another --out, or an empty folder")
        return set()
    try:
        installed = set(json.loads((staging / _INSTALLED).read_text()))
    except FileNotFoundError:
        installed = set()
    except (OSError, ValueError, TypeError) as exc:
        raise FetchError(f"{staging / _INSTALLED}: unreadable ({exc}); remove {out} and fetch again") from None
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if rel.split("/")[0] in (STAGING, RECORD) or path.is_dir() and not path.is_symlink():
            continue
        if rel not in installed:
            raise FetchError(f"{out}: {one_line(rel)} is not a file an earlier fetch put there; choose another --out "
                             "(a fetch overwrites nothing of yours)")
    return installed


# --- git -------------------------------------------------------------------------------

def _git_remote(remote: str) -> str:
    """`--from` for a git pin: a URL of a transport git may use, or a local repository (made absolute:
    git runs in the staging folder)."""
    if "://" in remote:
        if urlsplit(remote).scheme not in _GIT_SCHEMES or re.search(r"[\x00-\x20\x7f]", remote):
            raise FetchError(f"--from {one_line(remote)}: a git URL is {', '.join(s + '://' for s in _GIT_SCHEMES)}...")
        return remote
    path = Path(remote)
    if not path.is_dir():
        raise FetchError(f"--from {one_line(remote)}: neither a git URL nor a local repository")
    return str(path.resolve())


def _shown(url: str) -> str:
    """A remote as it may be printed: a URL's user name and password masked."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _git_checkout(remote: str, shown: str, revision: str, staging: Path, quiet: bool) -> tuple[Path, str, str]:
    """`revision` of `remote` checked out in `staging/repo` (fetched there unless an earlier
    run did), exactly the commit's files; returns the checkout, its commit, and where."""
    repo = staging / "repo"
    log = staging / "git.log"
    if not (repo / ".git").is_dir():
        _git(["init", "-q", str(repo)], staging, log, f"{repo}: cannot make a git repository")
    if not (_COMMIT.match(revision) and _git(["cat-file", "-e", f"{revision}^{{commit}}"], repo, log, None) is not None):
        _git(["fetch", "--depth", "1", "--no-tags", "--quiet" if quiet else "--progress", "--", remote, revision],
             repo, log, f"{shown}: cannot fetch {revision}", echo=not quiet)
    fetched = revision if _COMMIT.match(revision) else "FETCH_HEAD"
    commit = str(_git(["rev-parse", "--verify", "-q", f"{fetched}^{{commit}}"], repo, log,
                      f"{shown}: no commit {revision}")).strip()
    _git(["checkout", "-q", "-f", "--detach", commit] + ([] if quiet else ["--progress"]), repo, log,
         f"{shown}: cannot check out commit {commit}", echo=not quiet)
    _git(["clean", "-q", "-ffdx"], repo, log, f"{repo}: cannot clean the checkout")
    return repo, commit, shown


def _git(args: list[str], cwd: Path, log: Path, failure: str | None, echo: bool = False) -> str | None:
    """git's output (a child that ends with us4); its stderr goes to `log` (shown as it comes
    with `echo`), so that a failure is one line: `failure`, then git's own last word. With
    `failure` None, a failure is no error: the answer is then None."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATING}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_LFS_SKIP_SMUDGE="1")  # never wait for a password, never fetch LFS files
    with storage_errors(), open(log, "wb") as err, _echoing(log, echo):
        try:
            done = run_child(["git", *_GIT_CONFIG, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=err)
        except FileNotFoundError:
            raise FetchError("git is not installed (or not on PATH): a git pin is fetched with it") from None
    if done.returncode == 0:
        return done.stdout.decode(errors="replace")
    if failure is None:
        return None
    raise FetchError(f"{failure}: {_last_word(log.read_bytes()) or f'git exited with status {done.returncode}'}")


def _last_word(stderr: bytes) -> str:
    """What git said last that says why: its last fatal:/error: line, else its last line."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", stderr.decode(errors="replace")) if ln.strip()]
    said = [ln for ln in lines if ln.startswith(("fatal:", "error:"))] or lines
    return one_line(re.sub(r"://[^/@\s]+@", "://***@", said[-1])[:300]) if said else ""


@contextmanager
def _echoing(log: Path, enabled: bool) -> Iterator[None]:
    """What a child writes to `log` (git's progress), copied to stderr as it comes."""
    if not enabled:
        yield
        return
    stream, stop = sys.stderr, threading.Event()

    def pump() -> None:
        with open(log, "rb") as f:
            while True:
                last = stop.is_set()
                chunk = f.read()
                if chunk:
                    stream.write(chunk.decode(errors="replace"))
                    stream.flush()
                if last:
                    return
                stop.wait(0.1)

    thread = threading.Thread(target=pump, name="us4-git-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- Hub -------------------------------------------------------------------------------

def _endpoint(remote: str | None) -> str | None:
    if remote is not None and urlsplit(remote).scheme not in ("http", "https"):
        raise FetchError(f"--from {one_line(remote)}: a Hub endpoint is an http:// or https:// URL")
    return remote


def _hub_snapshot(repo_id: str, endpoint: str | None, revision: str, staging: Path,
                  quiet: bool) -> tuple[Path, str, str]:
    """`revision` of the Hub dataset repository in `staging/hub` (huggingface_hub resumes what
    an earlier run fetched), exactly the commit's files; returns it, its commit, and where."""
    from huggingface_hub import HfApi, snapshot_download

    from .hub._hf import REPO_TYPE, check_repo_id, hub_errors, progress_bars
    from .hub.download import _pin

    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint)
    where = f"{repo_id}@{revision} at {api.endpoint}"
    local = staging / "hub"
    with hub_errors(where), progress_bars(not quiet):
        info = _pin(api, repo_id, revision, where)
        in_background(lambda: snapshot_download(repo_id, repo_type=REPO_TYPE, revision=info.sha, local_dir=local,
                                                endpoint=endpoint))
    listed = {s.rfilename for s in info.siblings or []}
    for path in _files(local):  # left by an earlier run of another revision
        if path not in listed:
            (local / path).unlink()
    return local, info.sha, f"{repo_id} at {api.endpoint}"


# --- check and install -------------------------------------------------------------------

def _files(tree: Path) -> list[str]:
    """Every file and link under a staged tree, by relative path; git's and the Hub client's
    own folders left out."""
    out = []
    for root, dirs, names in os.walk(tree):
        rel_root = Path(root).relative_to(tree)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in (".git", ".cache")]
        out += [(rel_root / n).as_posix() for n in names]
        out += [(rel_root / d).as_posix() for d in dirs if os.path.islink(os.path.join(root, d))]
    return sorted(out)


def _classify(tree: Path, commit: str, by_path: dict[str, _Expected], by_content: dict[str, _Expected],
              done: Fetched, quiet: bool) -> tuple[list[str], list[str]]:
    """Hash every staged file against the manifest; fill `done`; return the files to keep, and
    those that differ from the manifest."""
    from tqdm import tqdm

    files = _files(tree)
    keep: list[str] = []
    rejected: list[str] = []
    seen: set[str] = set()  # contents hashed
    with tqdm(total=sum((tree / f).lstat().st_size for f in files), unit="B", unit_scale=True, desc="verifying",
              disable=quiet, file=sys.stderr) as bar:
        for rel in files:
            path = tree / rel
            shown = one_line(rel)
            if path.is_symlink() or rel.split("/")[0] in (STAGING, RECORD):
                done.left_out.append(f"{shown}: {'a link, not followed' if path.is_symlink() else 'a name us4 keeps'}")
                continue
            size = path.stat().st_size
            sha256 = sha256_file(path)
            seen.add(sha256)
            bar.update(size)
            want = by_path.get(rel) or by_content.get(sha256)
            pointer = size <= _LFS_POINTER_MAX and path.read_bytes().startswith(_LFS_POINTER)
            if want is not None and want.sha256 == sha256 and want.bytes in (None, size):
                done.verified.append(rel)
            elif want is None:
                (done.lfs_pointers if pointer else done.unverified).append(rel)
            elif not want.checked:
                done.unchecked.append(f"{shown} (differs from the manifest's; the recipe's pin checks "
                                      f"{', '.join(k for k in ('clips', 'sheets') if k != want.kind)} only)")
            else:
                done.problems.append(f"{shown}: " + (
                    "a Git LFS pointer, not the file (the repository keeps it in Git LFS)" if pointer else
                    f"sha256 {sha256[:12]}… ({size:,} bytes), the manifest says {want.sha256[:12]}… "
                    f"({want.bytes:,} bytes)" if want.bytes is not None else
                    f"sha256 {sha256[:12]}…, the manifest says {want.sha256[:12]}…") + "; not kept")
                rejected.append(rel)
                continue
            keep.append(rel)
            done.bytes += size
    present = set(files)
    done.problems += [f"{one_line(rel)}: named by the manifest, not in commit {commit[:12]}"
                      for rel, want in sorted(by_path.items()) if want.checked and rel not in present]
    done.problems += [f"a clip the manifest names by its content (sha256 {sha256[:12]}…): not in commit {commit[:12]}"
                      for sha256, want in sorted(by_content.items()) if want.checked and sha256 not in seen]
    return keep, rejected


def _install(tree: Path, out: Path, keep: list[str], staging: Path, installed: set[str]) -> None:
    """Move the kept files into `out`; what an earlier, unfinished run moved there and this one
    does not keep (another revision) goes. The record of what may be ours is written first."""
    with storage_errors():
        atomic_write(staging / _INSTALLED, json.dumps(sorted(installed | set(keep))).encode())
        for rel in sorted(installed - set(keep)):
            (out / rel).unlink(missing_ok=True)
        for rel in keep:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _move(tree / rel, target)
        atomic_write(staging / _INSTALLED, json.dumps(sorted(keep)).encode())


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)
