"""Publish a release: one commit holding exactly the files its lock names, tagged `v{version}`.

Two destinations share one flow (`_publish`): a Hub reached through `huggingface_hub`
(`publish_hub`) and a local git repository laid out as a Hub mirror, `DIR/datasets/ORG/NAME`
on branch `main` (`publish_git`), which `us4 mirror serve` then serves.

A version tag is never moved. Publishing again with the same content is a no-op; with
other data, an error. Evidence added after publishing (a benchmark record attached with
`us4 card --benchmark`) changes the lock's attachments and the card, never the data
(`Lock.data_sha256` stays the same): it is published as a new commit whose data files are
unchanged, tagged `v{version}+evidence.N`, while `v{version}` keeps naming the data as first
published.

`main` only moves forward: a commit goes on it when main is empty, holds the same data (evidence
about the version main serves), or an older version. Anything else (evidence about an older
version, or an older version published late) is a commit of its own, reached by its tag alone.

Licences: frames derived from a source whose licence forbids derivatives (ND) are not uploaded
unless `force` (the publisher holds the licensor's permission). `lock_only` publishes the lock, its
recipe (`recipe.yaml`) and a card saying how to rebuild, and no data file, tagged `v{version}`
like any first publish; a later publish of the same version with its data files (`force`) is a
commit tagged `v{version}+data.N`, so `v{version}` keeps naming what was first published. A
version whose data files are published is never published as its lock alone again (that commit
would take them off main).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import yaml
from tqdm.auto import tqdm

from ..contract.card import render_card
from ..contract.licences import RECIPE_FILE, Licensed, forbidding, release_licences
from ..contract.lock import CARD_NAME, LOCK_NAME, Lock, read_lock
from ..errors import HubError, ReleaseError, VerificationError
from ..hashing import sha256_file
from ..escape import one_line
from ..paths import UnsafePathError, safe_commit
from ..registry import NC, ND
from ..release.read import Release
from ..release.verify import verify_release
from ..system import in_background, run_child
from ..words import plural
from ._hf import REPO_TYPE, check_repo_id, hub_errors, progress_bars
from .download import DATA, HUB_OWN_FILES, lock_alone

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

BRANCH = "main"
EVIDENCE = "evidence"
#: above this many bytes a Hub upload goes through huggingface_hub's resumable large-folder upload
LARGE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class PublishPlan:
    """Everything a publish sends: files (path in repository, local file), commit text, tag."""

    repo_id: str
    tag: str
    title: str
    description: str
    files: tuple[tuple[str, Path], ...]
    data_sha256: str
    root: Path  # the release folder the files come from
    alone: bool = False  # the lock, recipe and card alone (--lock-only)

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.files]

    @property
    def bytes(self) -> int:
        return sum(local.stat().st_size for _, local in self.files)


@dataclass(frozen=True)
class Published:
    repo_id: str
    tag: str
    commit: str
    where: str  # the Hub URL, or the git repository's folder
    created: bool  # False: the tag already held exactly this content
    evidence: bool = False  # a new commit of evidence about an already published version
    main: str | None = None  # where main stays when this commit is not on it: the newer version it serves
    alone: bool = False  # the lock, recipe and card alone, no data file
    data: bool = False  # the data files of a version whose tag v{version} holds its lock alone
    notes: tuple[str, ...] = ()  # what the sources' licences say about what was published


def publish_plan(release: Release, repo_id: str) -> PublishPlan:
    """The files of a release that a publish sends (lock, card, croissant.json, shards and
    attachments), sorted by path. Only what the lock names travels: a stray file in the
    folder (a build cache, the local id map) never reaches a repository."""
    check_repo_id(repo_id)
    lock = release.lock
    return PublishPlan(
        repo_id=repo_id,
        tag=f"v{release.version}",
        title=f"{release.name} {release.version}",
        description=f"us4 release {release.name} {release.version}, lock sha256 {lock.sha256}, "
                    f"data sha256 {lock.data_sha256()}",
        files=tuple((name, release.path(name)) for name in lock.files()),
        data_sha256=lock.data_sha256(),
        root=release.root,
    )


def lock_only_plan(release: Release, repo_id: str, folder: Path) -> PublishPlan:
    """The lock, its recipe written out (`recipe.yaml`, which `us4 build` reads) and the card of a
    repository holding them alone (no data files; it says how to rebuild), written into `folder`.
    No croissant.json: it describes the shards as files of the repository, which are not there."""
    full = publish_plan(release, repo_id)
    lock = release.lock
    shutil.copyfile(release.path(LOCK_NAME), folder / LOCK_NAME)
    (folder / RECIPE_FILE).write_text(yaml.safe_dump(lock.recipe.as_recorded(), sort_keys=False, allow_unicode=True),
                                      encoding="utf-8")
    card = render_card(lock, lambda name: release.path(name).read_bytes(), alone=f"{repo_id}@{full.tag}")
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return replace(full, title=f"{full.title}: lock, recipe and card alone",
                   description=f"{full.description}; the data files are not published here: rebuild them "
                               "from the raw files (see README.md)",
                   files=tuple((name, folder / name) for name in sorted([CARD_NAME, LOCK_NAME, RECIPE_FILE])),
                   root=folder, alone=True)


@contextmanager
def planned(release: Release, repo_id: str, lock_only: bool = False) -> Iterator[PublishPlan]:
    """The plan of a publish, with the files a lock-only publish writes kept until it is done."""
    if not lock_only:
        yield publish_plan(release, repo_id)
        return
    with tempfile.TemporaryDirectory(prefix="us4-lock-only-") as folder:
        yield lock_only_plan(release, repo_id, Path(folder))


def commit_operations(plan: PublishPlan,
                      existing: Iterable[str] = ()) -> list[CommitOperationAdd | CommitOperationDelete]:
    """The operations of the one Hub commit: add every planned file, delete what the
    repository holds that this release does not (a shard an earlier version had)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)) for path, local in plan.files
    ]
    ops.extend(CommitOperationDelete(path_in_repo=path) for path in _stale(plan, existing))
    return ops


def _stale(plan: PublishPlan, existing: Iterable[str]) -> list[str]:
    """What the repository holds that this release does not (a shard an earlier version had)."""
    return sorted(set(existing) - set(plan.paths) - HUB_OWN_FILES)


def _commit(value: object, where: str) -> str:
    """A commit id a server reported, checked before it names anything."""
    try:
        return safe_commit(value, f"{where}: commit")
    except UnsafePathError as exc:
        raise HubError(str(exc)) from None


def publish_hub(release: Release, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
                private: bool | None = None, quiet: bool = False, force: bool = False,
                lock_only: bool = False) -> Published:
    """Create the dataset repository if needed, upload the release in one commit, tag it."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(f"{repo_id} at {api.endpoint}", token), progress_bars(not quiet):
        return _publish(release, lambda: _Hub(api, repo_id, private), repo_id, force, lock_only)


def publish_git(release: Release, root: str | Path, repo_id: str, *, quiet: bool = False,
                force: bool = False, lock_only: bool = False) -> Published:
    """Write the same commit and tag into the git repository `root/datasets/ORG/NAME` (branch main)."""
    org, name = check_repo_id(repo_id)

    def open_repository() -> _Git:
        git = _Git(Path(root) / "datasets" / org / name, quiet)
        git.init()
        return git

    return _publish(release, open_repository, repo_id, force, lock_only)


class _Destination(Protocol):
    where: str

    def tags(self) -> list[str]: ...

    def tag_content(self, tag: str) -> tuple[str, dict[str, _Stored]] | None: ...

    def read(self, commit: str, path: str) -> bytes: ...

    def head(self) -> str | None: ...

    def commit(self, plan: PublishPlan) -> str: ...

    def commit_aside(self, plan: PublishPlan, parent: str, tag: str, message: str) -> str: ...

    def tag(self, name: str, commit: str, message: str) -> None: ...


def _publish(release: Release, destination: Callable[[], _Destination], repo_id: str, force: bool,
             lock_only: bool = False) -> Published:
    """Check everything, then open the destination (nothing is created for a refused release)."""
    publish_plan(release, repo_id)  # the repository id, checked first
    _check_phantom(release.lock, repo_id, force)
    result = verify_release(release)
    if result.problems:
        raise VerificationError(f"{release.root}: not published, {len(result.problems)} file(s) differ from "
                                f"{LOCK_NAME}; first: {result.problems[0]}", result.problems)
    notes = check_licences(release, force, lock_only)  # of a verified release: its tables say what the lock pins
    with planned(release, repo_id, lock_only) as plan:
        return replace(_send(plan, release.lock, destination(), repo_id), notes=tuple(notes))


def _send(plan: PublishPlan, lock: Lock, dest: _Destination, repo_id: str) -> Published:
    """One commit of `plan` and its tag, placed by what the repository already holds."""
    tagged = dest.tag_content(plan.tag)
    if tagged is not None and not _differences(plan, tagged[1]):
        return Published(repo_id, plan.tag, tagged[0], dest.where, created=False, alone=plan.alone)
    if tagged is None:
        tag, message, parent, kind = plan.tag, plan.description, None, None
    else:
        published = _lock_at(dest, tagged[0], f"{repo_id}@{plan.tag}")
        if published.data_sha256() != plan.data_sha256:
            raise HubError(f"{repo_id}: tag {plan.tag} already holds other data "
                           f"({_first(_differences(plan, tagged[1]))}); a published version is never moved: "
                           "give the release a new version")
        first_alone = lock_alone(published, tagged[1])
        tags = dest.tags()
        data_tags = [t for t in tags if t.startswith(f"{plan.tag}+{DATA}.")]
        if plan.alone and (not first_alone or data_tags):
            where = plan.tag if not first_alone else data_tags[0]
            raise HubError(f"{repo_id}: {lock.name} {lock.version} is already published with its data files "
                           f"(tag {where}); a commit of its lock alone would take them off {BRANCH}: "
                           "publish it without --lock-only")
        # same data: v{version} keeps naming what was first published; this commit adds the data
        # files to a version first published as its lock alone, or evidence (a benchmark)
        kind = DATA if first_alone and not plan.alone else EVIDENCE
        pattern = re.compile(re.escape(plan.tag) + r"\+" + kind + r"\.(\d+)$")
        numbered = sorted((int(m.group(1)), t) for t in tags if (m := pattern.match(t)))
        for _, done in numbered:
            content = dest.tag_content(done)
            if content is not None and not _differences(plan, content[1]):
                return Published(repo_id, done, content[0], dest.where, created=False, evidence=kind == EVIDENCE,
                                 alone=plan.alone, data=kind == DATA)
        tag = f"{plan.tag}+{kind}.{(numbered[-1][0] if numbered else 0) + 1}"
        message = (f"the data files of {plan.title} (its lock alone: {plan.tag}); {plan.description}" if kind == DATA
                   else f"evidence about {plan.title} (data unchanged: {plan.tag}); {plan.description}")
        parent = tagged[0]
    newer = _newer_on_main(dest, lock, repo_id)
    if newer is None:
        commit = dest.commit(plan)
        dest.tag(tag, commit, message)
    else:  # main serves a newer version: this commit stays beside it, reached by its tag
        commit = dest.commit_aside(plan, parent or newer[0], tag, message)
    return Published(repo_id, tag, commit, dest.where, created=True, evidence=kind == EVIDENCE,
                     main=None if newer is None else newer[1], alone=plan.alone, data=kind == DATA)


def check_licences(release: Release, force: bool, lock_only: bool) -> list[str]:
    """Refuse to upload frames derived from a source whose licence forbids derivatives (ND), unless
    `force` (the publisher holds the licensor's permission) or `lock_only` (no frame leaves). Returns
    what the licences say about what is published: ND forced, non-commercial (NC), terms unread."""
    if lock_only:
        return []
    licences = release_licences(release.lock)
    nd = forbidding(licences, ND)
    if nd and not force:
        more = f" (and {plural(len(nd) - 1, 'other licence')} that forbid derivatives)" if len(nd) > 1 else ""
        raise HubError(f"{release.root}: not published: {_licence_of(nd[0])} forbids derivatives (ND){more}, "
                       "and every frame of the release is derived from a clip; publish the lock, recipe and card "
                       "alone (the same command with --lock-only), from which others rebuild it from the raw files, "
                       "or pass --force if you hold the licensor's permission to share derived frames")
    notes = [f"{_licence_of(lic)} forbids derivatives (ND): its frames are published under --force, on the "
             "licensor's permission" for lic in nd]
    notes += [f"{_licence_of(lic)} forbids commercial use (NC): shared for non-commercial use only, as the card says"
              for lic in forbidding(licences, NC)]
    notes += [f"{_licence_of(lic)} states terms us4 cannot read: check that it allows sharing frames derived from "
              "its clips" for lic in licences if lic.terms is None]
    return notes


def _licence_of(lic: Licensed) -> str:
    """`source S's licence 'L'`, or for a source licensed per clip `the licence 'L' of N clips of source S`."""
    shown = repr(one_line(lic.licence if len(lic.licence) <= 120 else lic.licence[:120] + "…"))
    if lic.per_clip:
        return f"the licence {shown} of {plural(lic.clips, 'clip')} of source {lic.source}"
    return f"source {lic.source}'s licence {shown}"


def _newer_on_main(dest: _Destination, lock: Lock, repo_id: str) -> tuple[str, str] | None:
    """(main's head, the version it serves) when a commit of `lock` on main would move it
    backwards: main holds other data of a version not older than this one. None: main may move."""
    head = dest.head()
    if head is None:
        return None
    try:
        serves = read_lock(dest.read(head, LOCK_NAME), f"{repo_id}@{BRANCH}: {LOCK_NAME}")
    except (HubError, ReleaseError):
        return None  # main holds no release (a repository made elsewhere): nothing to move backwards
    if serves.data_sha256() == lock.data_sha256() or version_key(serves.version) < version_key(lock.version):
        return None
    return head, serves.version


def version_key(version: str) -> tuple:
    """The order of release versions, as semantic versioning has it: dotted numbers compare as
    numbers, and a pre-release (1.2.0-rc1, 1.2.0-phantom) comes before its release (1.2.0)."""
    core, dash, pre = version.partition("-")

    def fields(text: str) -> tuple:
        return tuple((0, int(f), "") if f.isdigit() else (1, 0, f) for f in re.split(r"[.+_]", text))

    return fields(core), 0 if dash else 1, fields(pre)


def _check_phantom(lock: Lock, repo_id: str, force: bool) -> None:
    """A phantom release never passes for real data: its repository says phantom too, or --force."""
    if lock.phantom and "phantom" not in repo_id.lower() and not force:
        raise HubError(f"{lock.name} {lock.version} was built from phantom clips (synthetic, not real data); "
                       f"publish it to a repository whose name says phantom (not {repo_id}), or pass --force")


def _lock_at(dest: _Destination, commit: str, where: str) -> Lock:
    try:
        return read_lock(dest.read(commit, LOCK_NAME), f"{where}: {LOCK_NAME}")
    except ReleaseError as exc:
        raise HubError(f"{where}: the published release's lock cannot be read ({exc})") from None


def _first(differences: list[str]) -> str:
    return differences[0] + (f", and {len(differences) - 1} more" if len(differences) > 1 else "")


# --- what a tag already holds ------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """A file as a repository stores it: its git blob id and, for LFS files, the content's sha256."""

    blob: str
    lfs_sha256: str | None = None


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


# --- a Hub, through huggingface_hub -------------------------------------------------


class _Hub:
    def __init__(self, api: HfApi, repo_id: str, private: bool | None):
        self.api, self.repo_id, self.private = api, repo_id, private
        self.where = f"{api.endpoint}/datasets/{repo_id}"

    def tags(self) -> list[str]:
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        try:
            return [t.name for t in self.api.list_repo_refs(self.repo_id, repo_type=REPO_TYPE).tags]
        except (RepositoryNotFoundError, EntryNotFoundError):  # the Hub says the first, a mirror the second
            return []

    def tag_content(self, tag: str) -> tuple[str, dict[str, _Stored]] | None:
        from huggingface_hub import RepoFile
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        try:
            refs = self.api.list_repo_refs(self.repo_id, repo_type=REPO_TYPE)
        except (RepositoryNotFoundError, EntryNotFoundError):
            return None
        found = next((t for t in refs.tags if t.name == tag), None)
        if found is None:
            return None
        commit = _commit(found.target_commit, f"{self.repo_id}@{tag}")
        entries = self.api.list_repo_tree(self.repo_id, revision=commit, recursive=True, repo_type=REPO_TYPE)
        return commit, {e.path: _Stored(e.blob_id, e.lfs.sha256 if e.lfs else None)
                                     for e in entries if isinstance(e, RepoFile)}

    def read(self, commit: str, path: str) -> bytes:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, path, repo_type=REPO_TYPE, revision=commit,
                                        endpoint=self.api.endpoint, token=self.api.token)).read_bytes()
        except EntryNotFoundError:
            raise HubError(f"{self.repo_id}: {path} is not in commit {commit[:12]}") from None

    def head(self) -> str | None:
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            branches = self.api.list_repo_refs(self.repo_id, repo_type=REPO_TYPE).branches
        except (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError):
            return None
        main = next((b for b in branches if b.name == BRANCH), None)
        return _commit(main.target_commit, f"{self.repo_id}@{BRANCH}") if main else None

    def commit(self, plan: PublishPlan, revision: str = BRANCH) -> str:
        self.api.create_repo(self.repo_id, repo_type=REPO_TYPE, private=self.private, exist_ok=True)
        existing = self.api.list_repo_files(self.repo_id, repo_type=REPO_TYPE, revision=revision)
        if plan.bytes > LARGE_BYTES:
            return in_background(lambda: self._large(plan, existing, revision))
        # in_background: an interrupt stops us at once, not after every upload in flight
        info = in_background(lambda: self.api.create_commit(
            self.repo_id, commit_operations(plan, existing), commit_message=plan.title,
            commit_description=plan.description, repo_type=REPO_TYPE, revision=revision))
        return _commit(info.oid, self.repo_id)

    def commit_aside(self, plan: PublishPlan, parent: str, tag: str, message: str) -> str:
        """The Hub commits only onto a branch: one made at `parent` for this commit, gone once it is tagged."""
        branch = f"us4-publish-{uuid.uuid4().hex[:12]}"
        self.api.create_branch(self.repo_id, branch=branch, revision=parent, repo_type=REPO_TYPE)
        try:
            commit = self.commit(plan, branch)
            self.tag(tag, commit, message)
        finally:
            self.api.delete_branch(self.repo_id, branch=branch, repo_type=REPO_TYPE)
        return commit

    def _large(self, plan: PublishPlan, existing: list[str], revision: str) -> str:
        """A multi-GB release: huggingface_hub's resumable large-folder upload (many commits,
        resumed from its own records if interrupted), then one commit deleting stale files."""
        from huggingface_hub import CommitOperationDelete

        self.api.upload_large_folder(self.repo_id, plan.root, repo_type=REPO_TYPE, revision=revision,
                                     allow_patterns=plan.paths)
        stale = _stale(plan, existing)
        if not stale:
            return _commit(self.api.dataset_info(self.repo_id, revision=revision).sha, self.repo_id)
        ops = [CommitOperationDelete(path_in_repo=p) for p in stale]
        info = self.api.create_commit(self.repo_id, ops, commit_message=plan.title,
                                      commit_description=plan.description, repo_type=REPO_TYPE, revision=revision)
        return _commit(info.oid, self.repo_id)

    def tag(self, name: str, commit: str, message: str) -> None:
        # exist_ok=False: if someone tagged this version meanwhile, the Hub refuses instead of moving it
        self.api.create_tag(self.repo_id, tag=name, tag_message=message, revision=commit, repo_type=REPO_TYPE)


# --- the local git repository ---------------------------------------------------


class _Git:
    """The few git commands a local publish needs, run in one repository: one commit per publish."""

    def __init__(self, repo: Path, quiet: bool = True):
        self.dir = repo
        self.where = str(repo)
        self.quiet = quiet
        self._identity: list[str] = []

    def __call__(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        proc = run_child(["git", *self._identity, *args], cwd=self.dir, capture_output=True, text=True,
                         input=stdin, env=None if env is None else {**os.environ, **env})
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise HubError(f"{self.dir}: git {args[0]} failed ({detail[-1] if detail else proc.returncode})")
        return proc.stdout.strip()

    def ok(self, *args: str) -> bool:
        return run_child(["git", *args], cwd=self.dir, capture_output=True).returncode == 0

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

    def tags(self) -> list[str]:
        return [t for t in self("tag", "--list").splitlines() if t]

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

    def read(self, commit: str, path: str) -> bytes:
        proc = run_child(["git", "show", f"{commit}:{path}"], cwd=self.dir, capture_output=True)
        if proc.returncode != 0:
            raise HubError(f"{self.dir}: {path} is not in commit {commit[:12]}")
        return proc.stdout

    def commit(self, plan: PublishPlan) -> str:
        self._require_clean_main()
        self._cut_short.touch()  # until tagged: a publish killed before that is undone by the next
        planned = set(plan.paths)
        for tracked in [p for p in self("ls-files", "-z").split("\0") if p]:
            if tracked not in planned:
                (self.dir / tracked).unlink()
        with tqdm(total=plan.bytes, unit="B", unit_scale=True, desc=f"publish {plan.repo_id}",
                  disable=self.quiet) as bar:
            for path, local in plan.files:
                target = self.dir / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, target)
                bar.update(local.stat().st_size)
        self("add", "--all")
        if self.ok("rev-parse", "--verify", "--quiet", "HEAD") and self.ok("diff", "--cached", "--quiet"):
            return self("rev-parse", "HEAD")  # same files as main's head: tag it, no empty commit
        self("commit", "--quiet", "-m", plan.title, "-m", plan.description)
        return self("rev-parse", "HEAD")

    def head(self) -> str | None:
        return self("rev-parse", "HEAD") if self.ok("rev-parse", "--verify", "--quiet", "HEAD") else None

    def commit_aside(self, plan: PublishPlan, parent: str, tag: str, message: str) -> str:
        """A commit of exactly the plan's files whose parent is `parent`, built in an index of its
        own: neither main, nor its working tree, nor its index is touched."""
        index = self.dir / ".git" / f"us4-aside-{os.getpid()}.index"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            paths = "".join(f"{local.resolve()}\n" for _, local in plan.files)
            blobs = self("hash-object", "-w", "--stdin-paths", stdin=paths)
            self("update-index", "--add", "--index-info", env=env,
                 stdin="".join(f"100644 {blob}\t{path}\n" for (path, _), blob in zip(plan.files, blobs.split())))
            tree = self("write-tree", env=env)
        finally:
            index.unlink(missing_ok=True)
        commit = self("commit-tree", tree, "-p", parent, "-m", plan.title, "-m", plan.description)
        self.tag(tag, commit, message)
        return commit

    def tag(self, name: str, commit: str, message: str) -> None:
        self("tag", "--annotate", name, "-m", message, commit)
        self._cut_short.unlink(missing_ok=True)

    @property
    def _cut_short(self) -> Path:
        """Present while a publish runs: one killed (Ctrl-C, SIGTERM, kill -9) leaves it."""
        return self.dir / ".git" / "us4-publish-unfinished"

    def _undo_cut_short(self) -> None:
        """What a publish killed midway left (copied files, an index, no tag): main's head again."""
        if self.ok("rev-parse", "--verify", "--quiet", "HEAD"):
            self("reset", "--hard", "--quiet", "HEAD")
        else:
            self("read-tree", "--empty")
        self("clean", "-d", "--force", "--quiet")
        self._cut_short.unlink()

    def _require_clean_main(self) -> None:
        if self._cut_short.exists():
            self._undo_cut_short()
        branch = self("symbolic-ref", "--short", "HEAD")
        if branch != BRANCH:
            raise HubError(f"{self.dir}: on branch {branch!r}; the Hub layout serves {BRANCH!r}: check it out first")
        if self("status", "--porcelain"):
            raise HubError(f"{self.dir}: has uncommitted changes; commit or discard them before publishing")
