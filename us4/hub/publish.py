"""Publish a release: one commit holding exactly the files its lock names, tagged `v{version}`.

Two destinations share one plan (`publish_plan`): a Hub reached through `huggingface_hub`
(`publish_hub`) and a local git repository laid out as a Hub mirror, `DIR/datasets/ORG/NAME`
on branch `main` (`publish_git`), which `us4 mirror serve` then serves. A version tag is
never moved: publishing again with the same content is a no-op, with other content an error.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ..errors import HubError, VerificationError
from ..hashing import sha256_file
from ..release.read import CARD_NAME, LOCK_NAME, Release
from ..release.verify import lock_sha256, verify_release
from ._hf import REPO_TYPE, check_repo_id, hub_errors, progress_bars

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

# The Hub puts `.gitattributes` (its LFS rules) into every new repository: it belongs to the
# repository, not to the release, so publishing neither sends nor deletes it.
HUB_OWN_FILES = frozenset({".gitattributes"})
BRANCH = "main"


@dataclass(frozen=True)
class PublishPlan:
    """Everything a publish sends: files (path in repository, local file), commit text, tag."""

    repo_id: str
    tag: str
    title: str
    description: str
    files: tuple[tuple[str, Path], ...]

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.files]


@dataclass(frozen=True)
class Published:
    repo_id: str
    tag: str
    commit: str
    where: str  # the Hub URL, or the git repository's folder
    created: bool  # False: the tag already held exactly this content


def publish_plan(release: Release, repo_id: str) -> PublishPlan:
    """The files of a release that a publish sends (card, lock, shards and attachments), sorted by path.

    Only what the lock names travels: a stray file in the folder (a build cache, a
    scratch file) never reaches a repository.
    """
    check_repo_id(repo_id)
    lock = release.lock
    names = [CARD_NAME, LOCK_NAME, *(s["path"] for s in lock["shards"]), *lock.get("attachments", {})]
    return PublishPlan(
        repo_id=repo_id,
        tag=f"v{release.version}",
        title=f"{release.name} {release.version}",
        description=f"us4 release {release.name} {release.version}, lock sha256 {lock_sha256(lock)}",
        files=tuple(sorted((name, release.root / name) for name in set(names))),
    )


def commit_operations(plan: PublishPlan,
                      existing: Iterable[str] = ()) -> list[CommitOperationAdd | CommitOperationDelete]:
    """The operations of the one Hub commit: add every planned file, delete what the
    repository holds that this release does not (a shard an earlier version had)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)) for path, local in plan.files
    ]
    stale = sorted(set(existing) - set(plan.paths) - HUB_OWN_FILES)
    ops.extend(CommitOperationDelete(path_in_repo=path) for path in stale)
    return ops


def publish_hub(release: Release, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
                private: bool | None = None, quiet: bool = False) -> Published:
    """Create the dataset repository if needed, upload the release in one commit, tag it."""
    from huggingface_hub import HfApi

    plan = _checked_plan(release, repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(f"{repo_id} at {api.endpoint}", token), progress_bars(not quiet):
        tagged = _hub_tag_content(api, plan)
        if tagged is not None:
            return Published(repo_id, plan.tag, _refuse_or_same(plan, tagged, repo_id),
                             f"{api.endpoint}/datasets/{repo_id}", created=False)
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        existing = api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=BRANCH)
        info = api.create_commit(repo_id, commit_operations(plan, existing), commit_message=plan.title,
                                 commit_description=plan.description, repo_type=REPO_TYPE, revision=BRANCH)
        # exist_ok=False: if someone tagged this version meanwhile, the Hub refuses instead of moving it
        api.create_tag(repo_id, tag=plan.tag, tag_message=plan.description, revision=info.oid, repo_type=REPO_TYPE)
    return Published(repo_id, plan.tag, info.oid, f"{api.endpoint}/datasets/{repo_id}", created=True)


def publish_git(release: Release, root: str | Path, repo_id: str, *, quiet: bool = False) -> Published:
    """Write the same commit and tag into the git repository `root/datasets/ORG/NAME` (branch main)."""
    plan = _checked_plan(release, repo_id)
    org, name = check_repo_id(repo_id)
    git = _Git(Path(root) / "datasets" / org / name)
    git.init()
    tagged = git.tag_content(plan.tag)
    if tagged is not None:
        return Published(repo_id, plan.tag, _refuse_or_same(plan, tagged, repo_id), str(git.dir), created=False)
    git.require_clean_main()
    planned = set(plan.paths)
    for tracked in git.tracked():
        if tracked not in planned:
            (git.dir / tracked).unlink()
    total = sum(local.stat().st_size for _, local in plan.files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"publish {repo_id}", disable=quiet) as bar:
        for path, local in plan.files:
            target = git.dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            bar.update(local.stat().st_size)
    git("add", "--all")
    if git.has_head() and git.ok("diff", "--cached", "--quiet"):
        commit = git("rev-parse", "HEAD")  # same files as main's head: tag it, no empty commit
    else:
        git("commit", "--quiet", "-m", plan.title, "-m", plan.description)
        commit = git("rev-parse", "HEAD")
    git("tag", "--annotate", plan.tag, "-m", plan.description, commit)
    return Published(repo_id, plan.tag, commit, str(git.dir), created=True)


# --- what a tag already holds ------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """A file as a repository stores it: its git blob id and, for LFS files, the content's sha256."""

    blob: str
    lfs_sha256: str | None = None


def _checked_plan(release: Release, repo_id: str) -> PublishPlan:
    plan = publish_plan(release, repo_id)
    problems = verify_release(release)
    if problems:
        raise VerificationError(f"{release.root}: not published, {len(problems)} file(s) differ from "
                                f"{LOCK_NAME}; first: {problems[0]}", problems)
    return plan


def _refuse_or_same(plan: PublishPlan, tagged: tuple[str, dict[str, _Stored]], repo_id: str) -> str:
    """The tagged commit when it holds exactly the plan's files; else refuse to move the tag."""
    commit, stored = tagged
    differences = _differences(plan, stored)
    if differences:
        raise HubError(f"{repo_id}: tag {plan.tag} already holds other content ({differences[0]}"
                       f"{f', and {len(differences) - 1} more' if len(differences) > 1 else ''}); "
                       f"a published version is never moved: give the release a new version")
    return commit


def _differences(plan: PublishPlan, stored: dict[str, _Stored]) -> list[str]:
    out = []
    planned = dict(plan.files)
    for path in sorted(set(stored) - set(planned) - HUB_OWN_FILES):
        out.append(f"{path}: in the tag, not in this release")
    for path, local in sorted(planned.items()):
        entry = stored.get(path)
        if entry is None:
            out.append(f"{path}: in this release, not in the tag")
        elif entry.lfs_sha256 is not None:
            if entry.lfs_sha256 != sha256_file(local):
                out.append(f"{path}: different content")
        elif entry.blob != git_blob_id(local):
            out.append(f"{path}: different content")
    return out


def git_blob_id(path: Path) -> str:
    """The id git gives a file's content (sha1 of 'blob SIZE\\0' + bytes)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _hub_tag_content(api: HfApi, plan: PublishPlan) -> tuple[str, dict[str, _Stored]] | None:
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(plan.repo_id, repo_type=REPO_TYPE)
    except (RepositoryNotFoundError, EntryNotFoundError):  # the Hub says the first, a mirror the second
        return None
    tag = next((t for t in refs.tags if t.name == plan.tag), None)
    if tag is None:
        return None
    entries = api.list_repo_tree(plan.repo_id, revision=tag.target_commit, recursive=True, repo_type=REPO_TYPE)
    return tag.target_commit, {
        e.path: _Stored(e.blob_id, e.lfs.sha256 if e.lfs else None) for e in entries if isinstance(e, RepoFile)
    }


# --- the local git repository ---------------------------------------------------


class _Git:
    """The few git commands a local publish needs, run in one repository."""

    def __init__(self, repo: Path):
        self.dir = repo
        self._identity: list[str] = []

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(["git", *self._identity, *args], cwd=self.dir, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise HubError(f"{self.dir}: git {args[0]} failed ({detail[-1] if detail else proc.returncode})")
        return proc.stdout.strip()

    def ok(self, *args: str) -> bool:
        return subprocess.run(["git", *args], cwd=self.dir, capture_output=True).returncode == 0

    def init(self) -> None:
        if shutil.which("git") is None:
            raise HubError("git is not installed: publishing into a local repository needs it")
        if (self.dir / ".git").exists():
            pass
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise HubError(f"{self.dir}: exists and is not a git repository; choose another --git folder or --repo")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self("init", "--quiet", f"--initial-branch={BRANCH}")
        if not self.ok("config", "user.email"):
            # a publish must not fail on a machine where git was never given an identity
            self._identity = ["-c", "user.name=us4", "-c", "user.email=us4@localhost"]

    def has_head(self) -> bool:
        return self.ok("rev-parse", "--verify", "--quiet", "HEAD")

    def tracked(self) -> list[str]:
        return [p for p in self("ls-files", "-z").split("\0") if p]

    def require_clean_main(self) -> None:
        branch = self("symbolic-ref", "--short", "HEAD")
        if branch != BRANCH:
            raise HubError(f"{self.dir}: on branch {branch!r}; the Hub layout serves {BRANCH!r}: check it out first")
        if self("status", "--porcelain"):
            raise HubError(f"{self.dir}: has uncommitted changes; commit or discard them before publishing")

    def tag_content(self, tag: str) -> tuple[str, dict[str, _Stored]] | None:
        if not self.ok("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}"):
            return None
        commit = self("rev-parse", f"{tag}^{{commit}}")
        stored = {}
        for line in self("ls-tree", "-r", "-z", commit).split("\0"):
            if line:
                meta, path = line.split("\t", 1)
                stored[path] = _Stored(meta.split()[2])
        return commit, stored
