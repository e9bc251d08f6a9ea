"""A release's version: the recipe's, or `us4 build --version`; and the local suffix of a build
named like a release us4 ships whose clips are not that release's.

Rule: a build whose name and version are those of a shipped manifest (`pocus` 1.2.0:
manifests/pocus-1.2.0.json) but whose clips (source, id, content hash) are not exactly the
manifest's is versioned `VERSION-local.HASH8`, HASH8 the first 8 hex digits of the sha256 of
its sorted clip list: the same clips give the same version on every machine, and it never passes
for the shipped release (`-local...` also sorts before `VERSION` as a pre-release does). The
lock's recipe keeps the version it states: `verify --manifest` compares what was done, and the
recipe did what the shipped one did. A phantom build is named NAME-phantom, no shipped name.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from importlib.resources import files

from ..contract.lock import Lock, read_lock
from ..paths import safe_name
from ..recipe import Recipe
from ..release.read import MANIFESTS_PACKAGE

LOCAL = "-local."


@dataclass(frozen=True)
class Shipped:
    """The shipped manifest a build was named like, and how its clips differ from the build's."""

    name: str
    version: str
    clips: int
    added: int  # clips here, not there (or with other content)
    removed: int  # clips there, not here

    def line(self, version: str) -> str:
        return (f"its clips differ from the release us4 ships as {self.name} {self.version} ({self.added} added, "
                f"{self.removed} removed of {self.clips}): versioned {version}, not {self.version}")


def with_version(recipe: Recipe, version: str | None) -> Recipe:
    """The recipe, versioned `version` where one is given (`us4 build --version`)."""
    return recipe if version is None else replace(recipe, version=safe_name(version, "--version"))


def local_version(lock: Lock) -> tuple[Lock, Shipped | None]:
    """The lock, with the local suffix on its version when its name and version are a shipped
    manifest's and its clips are not that manifest's; and how they differ."""
    manifest = files(MANIFESTS_PACKAGE) / f"{lock.name}-{lock.version}.json"
    if not manifest.is_file():
        return lock, None
    shipped = read_lock(manifest.read_bytes(), f"{lock.name}-{lock.version}.json")
    here = {(c.source, c.video_id, c.sha256) for c in lock.clips}
    there = {(c.source, c.video_id, c.sha256) for c in shipped.clips}
    if here == there:
        return lock, None
    digest = hashlib.sha256("".join(f"{s}\t{v}\t{h}\n" for s, v, h in sorted(here)).encode()).hexdigest()
    version = f"{lock.version}{LOCAL}{digest[:8]}"
    return lock.model_copy(update={"version": version}), Shipped(shipped.name, shipped.version, len(there),
                                                                len(here - there), len(there - here))
