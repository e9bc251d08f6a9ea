"""What the licences of a release's sources allow, and how a release published without its
frames is rebuilt.

A source's licence comes from the registry, or from the recipe for a source it declares; a
source licensed per clip (POCUS: its metadata sheet's licence column) has each clip's licence in
the lock (and in the `licence` column of the `videos` table, which `us4 verify` compares with it). Terms are read from
the licence's text by `registry.licence_terms`, the one place that parses them. The card's
first screen, `us4 publish` (which refuses to upload frames derived from a no-derivatives
source) and a repository holding a lock alone (`us4 publish --lock-only`) all read them here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


from ..errors import RecipeError
from ..escape import markdown as md
from ..registry import NC, ND, licence_terms
from ..words import plural
from .lock import Lock

#: the file a lock-only repository holds beside the lock and the card: the lock's recipe, written out
RECIPE_FILE = "recipe.yaml"


@dataclass(frozen=True)
class Licensed:
    """Clips of one source under one licence."""

    source: str
    licence: str  # as the registry, the recipe or the clip's sheet states it
    terms: frozenset[str] | None  # None: the text names no licence us4 can read
    clips: int
    per_clip: bool  # the source states a licence per clip (its sheet), this is one of them


def release_licences(lock: Lock) -> list[Licensed]:
    """Every (source, licence) of the release with its terms and clip count, by source then licence.
    A source licensed per clip takes each clip's from the lock; a lock of us4 0.2.0 did not record
    them there (its videos table did), and its clips count as of terms not stated."""
    from .card import source_definition  # the card imports this module

    clips = Counter(c.source for c in lock.clips)
    out: list[Licensed] = []
    for name in sorted(lock.recipe.sources):
        src = source_definition(lock, name)
        if src.sheet_licence is None:
            out.append(Licensed(name, src.licence, licence_terms(src.licence), clips[name], False))
            continue
        per_clip = Counter(c.licence or "" for c in lock.clips if c.source == name)
        out += [Licensed(name, text, licence_terms(text), n, True) for text, n in sorted(per_clip.items())]
    return out


def forbidding(licences: list[Licensed], term: str) -> list[Licensed]:
    """Those whose terms include `term` (ND, NC)."""
    return [lic for lic in licences if lic.terms is not None and term in lic.terms]


def licence_notes(lock: Lock) -> list[str]:
    """The card's first-screen sentences (Markdown) for sources whose licence forbids derivatives
    or commercial use, and for sources licensed per clip."""
    from .card import source_definition  # the card imports this module

    licences = release_licences(lock)
    notes = []
    for source in sorted({lic.source for lic in licences}):
        mine = [lic for lic in licences if lic.source == source]
        if mine[0].per_clip:
            notes.append(_per_clip_note(source, mine, source_definition(lock, source).sheet_licence or ""))
            continue
        lic = mine[0]
        if lic.terms is None or not lic.terms & {NC, ND}:
            continue
        said = f"source {md(source)} is licensed {md(lic.licence)}, which "
        if ND in lic.terms:
            notes.append(f"**Licence: no derivatives.** The {said}forbids sharing derivatives (ND), and every frame "
                         "of this release is derived from its clips: share them only with the licensor's permission. "
                         "`us4 publish --lock-only` publishes the lock, recipe and card alone, from which whoever "
                         "holds the raw files rebuilds the release."
                         + (" The licence also forbids commercial use (NC)." if NC in lic.terms else ""))
        else:
            notes.append(f"**Licence: non-commercial.** The {said}forbids commercial use (NC) of its clips and of "
                         "the frames derived from them.")
    return notes


def _per_clip_note(source: str, mine: list[Licensed], column: str) -> str:
    def share(group: list[Licensed], what: str, term: str) -> str:
        n = sum(lic.clips for lic in group)
        if not n:
            return f"none forbids {what} ({term})"
        return (f"{n} forbid{'s' if n == 1 else ''} {what} ({term}: "
                + ", ".join(md(lic.licence) for lic in group) + ")")

    unknown = [lic for lic in mine if lic.terms is None]
    parts = [share(forbidding(mine, NC), "commercial use", NC), share(forbidding(mine, ND), "derivatives", ND)]
    if unknown:
        n = sum(lic.clips for lic in unknown)
        parts.append(f"{n} state{'s' if n == 1 else ''} terms us4 cannot read ("
                     + ", ".join(md(lic.licence) or "none stated" for lic in unknown) + "): read them before use")
    nd = (" Frames of a clip whose licence forbids derivatives may be shared only with its licensor's permission "
          "(`us4 publish` refuses to upload them)." if forbidding(mine, ND) else "")
    return (f"**Licences vary per clip.** Source {md(source)} states a licence per clip (its metadata sheet's "
            f"{md(column)} column; the lock and the `licence` column of the `videos` config hold each clip's). Of its "
            f"{plural(sum(lic.clips for lic in mine), 'clip')}, " + ", ".join(parts[:-1]) + " and " + parts[-1]
            + "." + nd)


# --- rebuilding a release from its lock -------------------------------------------


def shipped_recipe(lock: Lock) -> str | None:
    """The name of a recipe this us4 ships that states exactly the lock's recipe, if one does."""
    from ..recipe import load_recipe, packaged_recipes

    stated = lock.recipe.to_dict()
    for path in packaged_recipes():
        try:
            if load_recipe(path).to_dict() == stated:
                return path.name.removesuffix(".yaml")
        except RecipeError:
            continue
    return None


def rebuild_commands(lock: Lock, manifest: str) -> list[str]:
    """The commands that rebuild a release from its sources' raw files and check it against the lock
    `manifest` names (ORG/NAME@REVISION): fetch each source, build with the lock's recipe, verify."""
    sources = sorted(lock.recipe.sources)
    raw = " ".join(f"--raw {s}=raw/{s}" for s in sources)
    return [*(f"us4 fetch {s} --out raw/{s}" for s in sources),
            f"us4 build {shipped_recipe(lock) or RECIPE_FILE} {raw} --out {lock.name}",
            f"us4 verify {lock.name} --manifest {manifest}"]


def lock_only_notice(lock: Lock, manifest: str) -> str:
    """The card's first lines in a repository that holds the lock, recipe and card alone."""
    recipe = shipped_recipe(lock)
    which = (f"the recipe us4 ships as `{recipe}` (the same as `{RECIPE_FILE}` here)" if recipe
             else f"`{RECIPE_FILE}` of this repository")
    return "\n".join([
        "**The data files are not in this repository.** It holds the lock (`release.json`, which names every "
        f"shard and clip by its sha256), the recipe (`{RECIPE_FILE}`) and this card alone: the frames are not "
        "published here. Rebuild them from the sources' raw files (`us4 fetch` gets those us4 knows where to "
        f"find; elsewhere use your own copy) with {which}, and check that the rebuild holds exactly the bytes "
        "this lock names:",
        "",
        "```bash",
        *rebuild_commands(lock, manifest),
        "```",
    ])
