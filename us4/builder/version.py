"""A release's version: the recipe's, or `us4 build --version`; and the local suffix of a build
named like a release us4 ships whose clips are not that release's.

Rule: a build whose name and version are those of a shipped manifest (`pocus` 1.2.0:
manifests/pocus-1.2.0.json) but whose clips (source, id, content hash) are not exactly the
manifest's is versioned `VERSION-local.HASH8`, HASH8 the first 8 hex digits of the sha256 of
its sorted clip list: the same clips give the same version on every machine, and it never passes
for the shipped release (`-local...` also sorts before `VERSION` as a pre-release does).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from importlib.resources import files

from ..contract.lock import read_lock
from ..paths import safe_name
from ..recipe import Recipe
from ..release.read import MANIFESTS_PACKAGE
from .plan import ClipJob

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


def local_version(recipe: Recipe, phantom: bool, good: list[ClipJob]) -> tuple[Recipe, Shipped | None]:
    """The recipe with the local suffix when its name and version are a shipped manifest's and
    `good` (the clips the release will hold) are not that manifest's clips; a phantom build is
    named apart already (NAME-phantom)."""
    manifest = files(MANIFESTS_PACKAGE) / f"{recipe.name}-{recipe.version}.json"
    if phantom or not manifest.is_file():
        return recipe, None
    lock = read_lock(manifest.read_bytes(), f"{recipe.name}-{recipe.version}.json")
    here = {(j.source, j.video_id, j.sha256) for j in good}
    there = {(c.source, c.video_id, c.sha256) for c in lock.clips}
    if here == there:
        return recipe, None
    digest = hashlib.sha256("".join(f"{s}\t{v}\t{h}\n" for s, v, h in sorted(here)).encode()).hexdigest()
    version = f"{recipe.version}{LOCAL}{digest[:8]}"
    return replace(recipe, version=version), Shipped(lock.name, lock.version, len(there), len(here - there),
                                                     len(there - here))
