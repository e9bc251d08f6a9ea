"""Download one revision of a release repository and verify it before anyone can use it.

The lock comes first, alone: it is validated (paths included) and says which files to
fetch; nothing else the repository holds is kept (it is reported and left out). With
`sources` or `splits`, only their shards are fetched (plus the lock, the card, the
Croissant file and the attachments), and verified against the full lock.

Files land in a staging folder beside the destination (`.NAME.us4-partial`); only once
every file matches the lock is the folder renamed into place. A failed verification
deletes the staging copy, so nothing unverified is ever found at the destination; an
interrupted transfer leaves it, and the next run resumes from it (`huggingface_hub`
keeps per-file metadata and partial files there). An interrupt (Ctrl-C, SIGTERM) reaches
the caller at once; `us4 download` then ends without waiting for the transfers in flight.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.layout import DOWNLOAD_STATE
from ..contract.licences import RECIPE_FILE, rebuild_commands, shipped_recipe
from ..contract.lock import LOCK_NAME, Lock, read_lock
from ..errors import HubError, ReleaseError, Us4Error, VerificationError
from ..paths import UnsafePathError, safe_commit, safe_name
from ..release.read import open_release
from ..release.verify import verify_release
from ..system import in_background
from ._hf import REPO_TYPE, check_repo_id, hub_errors, progress_bars

if TYPE_CHECKING:
    from huggingface_hub import DatasetInfo, HfApi

# Where `huggingface_hub` keeps its resume metadata inside a local_dir download.
_HF_LOCAL_META = Path(DOWNLOAD_STATE) / "huggingface"
_STAGING_SUFFIX = ".us4-partial"
#: files a Hub puts in every repository, which belong to the repository, not to the release
HUB_OWN_FILES = frozenset({".gitattributes"})
#: the tags of commits holding the data files of a version whose vVERSION holds its lock alone: vVERSION+data.N
DATA = "data"


@dataclass(frozen=True)
class Downloaded:
    repo_id: str
    revision: str
    commit: str
    path: Path
    files: int
    bytes: int
    partial: bool = False  # only some sources or splits were fetched
    left_out: list[str] = field(default_factory=list)  # files of the commit that the lock does not name


def default_out(repo_id: str, revision: str) -> Path:
    """`NAME-REVISION` in the working directory, e.g. `pocus-v1.0.0`."""
    return Path(f"{repo_id.split('/')[-1]}-{revision.replace('/', '-')}")


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}{_STAGING_SUFFIX}"


def download_release(repo_id: str, revision: str, out: str | Path | None = None, *, endpoint: str | None = None,
                     token: str | None = None, quiet: bool = False, sources: Sequence[str] | None = None,
                     splits: Sequence[str] | None = None) -> Downloaded:
    """Fetch exactly what `revision`'s lock names (some sources/splits of it, if asked),
    verify every file against the lock, move it to `out`."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

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
        lock_path = hf_hub_download(repo_id, LOCK_NAME, repo_type=REPO_TYPE, revision=info.sha, local_dir=staging,
                                    endpoint=endpoint, token=token)
        try:
            lock = read_lock(Path(lock_path).read_bytes(), f"{where}: {LOCK_NAME}")
            wanted = lock.files(sources, splits)  # paths checked: no glob character reaches a pattern
            if lock_alone(lock, listed):
                raise HubError(_alone_message(api, lock, repo_id, revision, where))
            missing = sorted(set(wanted) - listed)
            if missing:
                raise VerificationError(f"{where}: {len(missing)} file(s) the lock names are not in the commit; "
                                        f"first: {missing[0]}", [f"{m}: missing" for m in missing])
        except Us4Error:
            shutil.rmtree(staging, ignore_errors=True)  # nothing of a refused download stays behind
            raise
        _drop_unlisted(staging, set(wanted))
        # in_background: an interrupt stops us at once, not after every transfer in flight
        in_background(lambda: snapshot_download(repo_id, repo_type=REPO_TYPE, revision=info.sha, local_dir=staging,
                                                allow_patterns=wanted, endpoint=endpoint, token=token))  # exact paths
    _verify_or_discard(staging, where, out, wanted)
    shutil.rmtree(staging / _HF_LOCAL_META.parts[0], ignore_errors=True)
    if out.exists():
        out.rmdir()  # empty, checked above
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    files = [p for p in out.rglob("*") if p.is_file()]
    return Downloaded(repo_id, revision, info.sha, out, len(files), sum(p.stat().st_size for p in files),
                      partial=bool(sources or splits), left_out=sorted(listed - set(lock.files()) - HUB_OWN_FILES))


def lock_alone(lock: Lock, paths: Collection[str]) -> bool:
    """Whether a commit holding `paths` holds a release's lock without its data files (`us4 publish
    --lock-only`): none of the shards the lock names is there."""
    return bool(lock.shards) and not any(s.path in paths for s in lock.shards)


def _alone_message(api: HfApi, lock: Lock, repo_id: str, revision: str, where: str) -> str:
    """One line: the revision holds the lock alone, where the data files are if a later commit
    published them, and how to rebuild the release."""
    data_tags = [t.name for t in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags
                 if t.name.startswith(f"v{lock.version}+{DATA}.")]
    elsewhere = (f"; tag {', '.join(sorted(data_tags))} of the repository holds them" if data_tags else "")
    recipe = "" if shipped_recipe(lock) else f" ({RECIPE_FILE} is in the repository beside the lock)"
    return (f"{where}: holds the lock, recipe and card of {lock.name} {lock.version} alone, not its data files "
            f"(us4 publish --lock-only){elsewhere}; rebuild the release from its sources' raw files: "
            + "; ".join(rebuild_commands(lock, f"{repo_id}@{revision}")) + recipe)


def fetch_lock(repo_id: str, revision: str, *, endpoint: str | None = None, token: str | None = None) -> Lock:
    """Only the lock of `repo_id@revision`, validated: what `us4 diff` and `us4 verify
    --manifest` need of a Hub revision (never its frame shards)."""
    from huggingface_hub import HfApi, hf_hub_download

    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision} at {api.endpoint}"
    with hub_errors(where, token), progress_bars(False):
        commit = _pin(api, repo_id, revision, where).sha
        path = hf_hub_download(repo_id, LOCK_NAME, repo_type=REPO_TYPE, revision=commit, endpoint=endpoint,
                               token=token, cache_dir=cache_root() / "locks")
    return read_lock(Path(path).read_bytes(), f"{where}: {LOCK_NAME}")


def _pin(api: HfApi, repo_id: str, revision: str, where: str) -> DatasetInfo:
    """The commit `revision` names (a full commit id, checked). A mirror answers an unknown
    revision as an unknown repository: tell the two apart, and list the tags that do exist."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        info = api.dataset_info(repo_id, revision=revision, files_metadata=False)
    except RepositoryNotFoundError:
        try:
            refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
        except (RepositoryNotFoundError, EntryNotFoundError):
            raise HubError(f"{where}: no such dataset repository (or no access to it)") from None
        tags = ", ".join(t.name for t in refs.tags) or "none"
        raise HubError(f"{where}: no such revision; the repository's tags: {tags}") from None
    try:
        safe_commit(info.sha, "commit the server named")
    except UnsafePathError as exc:
        raise HubError(f"{where}: {exc}") from None
    return info


def _drop_unlisted(staging: Path, wanted: set[str]) -> None:
    """A staging folder left by an interrupted download of another revision (or of other
    sources) may hold files this one does not want; they would pass for stray files."""
    for path in sorted(staging.rglob("*"), reverse=True):
        rel = path.relative_to(staging)
        if rel.parts[:2] == _HF_LOCAL_META.parts:
            continue
        if path.is_file() and rel.as_posix() not in wanted:
            path.unlink()


def _verify_or_discard(staging: Path, where: str, out: Path, expect: list[str] | None) -> None:
    kept = False
    try:
        try:
            result = verify_release(open_release(staging), expect=expect)
        except ReleaseError as exc:
            raise HubError(f"{where}: not a readable us4 release ({exc}); nothing was kept") from None
        if result.problems:
            raise VerificationError(
                f"{where}: {len(result.problems)} file(s) failed verification against {LOCK_NAME}, nothing was kept "
                f"at {out}; first: {result.problems[0]}", result.problems)
        kept = True
    finally:
        if not kept:  # whatever went wrong, an unverified copy must not stay around to be mistaken for good
            shutil.rmtree(staging, ignore_errors=True)


def cache_root() -> Path:
    """Where `us4.load` keeps verified downloads: $US4_CACHE, else $HF_HOME/us4."""
    from huggingface_hub import constants

    return Path(os.environ.get("US4_CACHE") or Path(constants.HF_HOME) / "us4")


@dataclass(frozen=True)
class Resolved:
    path: Path
    verified: bool  # verified against its lock by this call (a fresh download)


def fetch_release(repo_id: str, revision: str, *, endpoint: str | None = None, token: str | None = None,
                  quiet: bool = False, cache_dir: str | Path | None = None,
                  sources: Sequence[str] | None = None) -> Resolved:
    """A verified local copy of `repo_id@revision` (of some of its sources), downloaded
    once per commit (and choice of sources) into the cache."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision} at {api.endpoint}"
    with hub_errors(where, token):
        commit = _pin(api, repo_id, revision, where).sha  # one lookup, and its clear errors
    # keyed by commit, not by revision name: a branch moves, a commit does not
    name = commit + (f"-{'+'.join(sorted(safe_name(s, 'source') for s in sources))}" if sources else "")
    path = Path(cache_dir or cache_root()) / "datasets" / repo_id / name
    if (path / LOCK_NAME).is_file():
        return Resolved(path, verified=False)
    download_release(repo_id, commit, path, endpoint=endpoint, token=token, quiet=quiet, sources=sources)
    return Resolved(path, verified=True)


def resolve_release(source: str | Path, revision: str | None = None, *, endpoint: str | None = None,
                    token: str | None = None, quiet: bool = False, sources: Sequence[str] | None = None) -> Resolved:
    """A release folder as it is, or a repository (`ORG/NAME` with `revision`, or written
    `ORG/NAME@REVISION`; default branch main) as a verified download in the cache."""
    path = Path(source)
    if path.is_dir():
        if revision is not None:
            raise HubError(f"{source}: a revision applies to a repository, not to a local folder")
        return Resolved(path, verified=False)
    repo_id, revision = split_ref(str(source), revision)
    return fetch_release(repo_id, revision, endpoint=endpoint, token=token, quiet=quiet, sources=sources)


def split_ref(ref: str, revision: str | None = None) -> tuple[str, str]:
    """`ORG/NAME[@REVISION]` -> (repo id, revision; default main)."""
    repo_id, at, pinned = ref.partition("@")
    if repo_id.count("/") != 1:
        raise ReleaseError(f"{ref}: no such release folder, lock file, nor a repository ORG/NAME[@REVISION]")
    if at and revision is not None and pinned != revision:
        raise HubError(f"{ref}: names revision {pinned!r} but revision={revision!r} was given too")
    return repo_id, pinned or revision or "main"
