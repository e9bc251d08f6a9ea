"""Download one revision of a release repository and verify it before anyone can use it.

Files land in a staging folder beside the destination (`.NAME.us4-partial`); only once
every file matches the lock is the folder renamed into place. A failed verification
deletes the staging copy, so nothing unverified is ever found at the destination; an
interrupted transfer leaves it, and the next run resumes from it (`huggingface_hub`
keeps per-file metadata and partial files there).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HubError, ReleaseError, VerificationError
from ..release.read import LOCK_NAME, open_release
from ..release.verify import verify_release
from ._hf import REPO_TYPE, check_repo_id, hub_errors, progress_bars

if TYPE_CHECKING:
    from huggingface_hub import DatasetInfo, HfApi

# Where `huggingface_hub` keeps its resume metadata inside a local_dir download.
_HF_LOCAL_META = Path(".cache") / "huggingface"
_STAGING_SUFFIX = ".us4-partial"


@dataclass(frozen=True)
class Downloaded:
    repo_id: str
    revision: str
    commit: str
    path: Path
    files: int
    bytes: int


def default_out(repo_id: str, revision: str) -> Path:
    """`NAME-REVISION` in the working directory, e.g. `pocus-v1.0.0`."""
    return Path(f"{repo_id.split('/')[-1]}-{revision.replace('/', '-')}")


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}{_STAGING_SUFFIX}"


def download_release(repo_id: str, revision: str, out: str | Path | None = None, *, endpoint: str | None = None,
                     token: str | None = None, quiet: bool = False) -> Downloaded:
    """Fetch exactly `revision` of `repo_id`, verify every file against its lock, move it to `out`."""
    from huggingface_hub import HfApi, snapshot_download

    check_repo_id(repo_id)
    out = Path(out) if out is not None else default_out(repo_id, revision)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"{out}: already exists and is not empty; choose another --out or remove it")
    staging = staging_dir(out)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision} at {api.endpoint}"
    with hub_errors(where, token), progress_bars(not quiet):
        # Pin the commit first: a branch that moves during the transfer cannot mix two versions.
        info = _pin(api, repo_id, revision, where)
        listed = {s.rfilename for s in info.siblings or []}
        if LOCK_NAME not in listed:
            raise HubError(f"{where}: not a us4 release (no {LOCK_NAME} in commit {info.sha[:12]})")
        staging.mkdir(parents=True, exist_ok=True)
        _drop_unlisted(staging, listed)
        snapshot_download(repo_id, repo_type=REPO_TYPE, revision=info.sha, local_dir=staging,
                          endpoint=endpoint, token=token)
    _verify_or_discard(staging, where, out)
    shutil.rmtree(staging / _HF_LOCAL_META.parts[0], ignore_errors=True)
    if out.exists():
        out.rmdir()  # empty, checked above
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    files = [p for p in out.rglob("*") if p.is_file()]
    return Downloaded(repo_id, revision, info.sha, out, len(files), sum(p.stat().st_size for p in files))


def _pin(api: HfApi, repo_id: str, revision: str, where: str) -> DatasetInfo:
    """The commit `revision` names. A mirror answers an unknown revision as an unknown
    repository: tell the two apart, and list the tags that do exist."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return api.dataset_info(repo_id, revision=revision)
    except RepositoryNotFoundError:
        try:
            refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
        except (RepositoryNotFoundError, EntryNotFoundError):
            raise HubError(f"{where}: no such dataset repository (or no access to it)") from None
        tags = ", ".join(t.name for t in refs.tags) or "none"
        raise HubError(f"{where}: no such revision; the repository's tags: {tags}") from None


def _drop_unlisted(staging: Path, listed: set[str]) -> None:
    """A staging folder left by an interrupted download of another revision may hold files
    this revision lacks; they would pass for stray release files, so they go first."""
    for path in sorted(staging.rglob("*"), reverse=True):
        rel = path.relative_to(staging)
        if rel.parts[:2] == _HF_LOCAL_META.parts:
            continue
        if path.is_file() and rel.as_posix() not in listed:
            path.unlink()


def _verify_or_discard(staging: Path, where: str, out: Path) -> None:
    kept = False
    try:
        try:
            problems = verify_release(open_release(staging))
        except ReleaseError as exc:
            raise HubError(f"{where}: not a readable us4 release ({exc}); nothing was kept") from None
        if problems:
            raise VerificationError(
                f"{where}: {len(problems)} file(s) failed verification against {LOCK_NAME}, nothing was kept "
                f"at {out}; first: {problems[0]}", problems)
        kept = True
    finally:
        if not kept:  # whatever went wrong, an unverified copy must not stay around to be mistaken for good
            shutil.rmtree(staging, ignore_errors=True)


def cache_root() -> Path:
    """Where `us4.load` and `us4 diff` keep verified downloads: $US4_CACHE, else $HF_HOME/us4."""
    from huggingface_hub import constants

    return Path(os.environ.get("US4_CACHE") or Path(constants.HF_HOME) / "us4")


@dataclass(frozen=True)
class Resolved:
    path: Path
    verified: bool  # verified against its lock by this call (a fresh download)


def fetch_release(repo_id: str, revision: str, *, endpoint: str | None = None, token: str | None = None,
                  quiet: bool = False, cache_dir: str | Path | None = None) -> Resolved:
    """A verified local copy of `repo_id@revision`, downloaded once per commit into the cache."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision} at {api.endpoint}"
    with hub_errors(where, token):
        commit = _pin(api, repo_id, revision, where).sha  # one lookup, and its clear errors
    # keyed by commit, not by revision name: a branch moves, a commit does not
    path = Path(cache_dir or cache_root()) / "datasets" / repo_id / commit
    if (path / LOCK_NAME).is_file():
        return Resolved(path, verified=False)
    download_release(repo_id, commit, path, endpoint=endpoint, token=token, quiet=quiet)
    return Resolved(path, verified=True)


def resolve_release(source: str | Path, revision: str | None = None, *, endpoint: str | None = None,
                    token: str | None = None, quiet: bool = False) -> Resolved:
    """A release folder as it is, or a repository (`ORG/NAME` with `revision`, or written
    `ORG/NAME@REVISION`; default branch main) as a verified download in the cache."""
    path = Path(source)
    if path.is_dir():
        if revision is not None:
            raise HubError(f"{source}: a revision applies to a repository, not to a local folder")
        return Resolved(path, verified=False)
    repo_id, at, pinned = str(source).partition("@")
    if repo_id.count("/") != 1:
        raise ReleaseError(f"{source}: no such release folder, nor a repository ORG/NAME[@REVISION]")
    if at and revision is not None and pinned != revision:
        raise HubError(f"{source}: names revision {pinned!r} but revision={revision!r} was given too")
    return fetch_release(repo_id, pinned or revision or "main", endpoint=endpoint, token=token, quiet=quiet)
