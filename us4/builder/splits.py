"""Whole videos, and whole groups of videos, to splits: never a frame. Deterministic.

Units are groups: clips joined by the split rule (near-duplicate frames, a sheet column)
or a clip alone. A unit may hold clips of several classes (a class is a source's label)
and is never divided. The rule, balanced by class:

- Each class has a target in each split: the split's share of the class's videos (a fifth
  in each of 5 folds; the validation fraction of a holdout, so each class keeps that share).
  A holdout's targets are whole videos, rounded so that the validation split holds its share
  of all videos: classes too small for a validation video of their own (2 clips at 20 %)
  give it one in turn, largest remainders first.
- Units are dealt largest first, each to the split that leaves the sum over classes and
  splits of (videos - target)^2 smallest: the split where its classes lie furthest below
  target. Ties go to the split whose total lies furthest below its share, then to a hash of
  the unit's content, the split and the seed; units of one size are taken in the order of
  a hash of their content and the seed. So the input's order never matters, and a class
  whose units hold no other class ends with a spread (most minus fewest videos per fold,
  each less its target) no wider than its largest unit (`contract.balance`), and in every
  fold once it has k units.
- Inherited splits (`--previous`, `splits.inherit`): a unit holding clips of the earlier
  release goes to the split most of them had (a group now spanning splits goes whole), and
  the other units are dealt around the kept ones, but only while no class ends worse than
  a deal without inheritance and its largest unit allow: with a split lacking the class
  that such a deal fills, or a spread wider than both. Otherwise kept units holding the
  class are dealt again, one per such class a round, each from the split holding the most
  of it (smallest unit first), until none is worse. Every clip that leaves its earlier split gets
  a SPLIT_MOVED warning saying why.

Assignment covers every planned clip, those that later fail included, so one clip failing
on one machine moves no other clip. More folds than units to deal is an error.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction

from ..contract.balance import ClassBalance, class_balance
from ..contract.lock import BuildWarning, WarningKind
from ..errors import RecipeError
from ..recipe import Folds, Recipe, Splits
from ..words import plural
from .plan import ClipJob


@dataclass(frozen=True)
class Assignment:
    split: str
    fold: int | None
    group: str | None  # published group id, for clips that share their unit with others


@dataclass(frozen=True)
class PreviousSplits:
    """Splits of the clips of an earlier release, by video id and by clip content hash."""

    name: str  # the earlier release's name and version
    version: str
    by_id: dict[str, str]
    by_sha256: dict[str, str]
    clips: tuple[tuple[str, str], ...]  # (video id, content sha256) of every clip it held

    def of(self, job: ClipJob) -> str | None:
        return self.by_id.get(job.video_id) or self.by_sha256.get(job.sha256)

    def removed(self, jobs: list[ClipJob]) -> list[str]:
        """The earlier release's clips that no planned clip is, by video id or by content."""
        ids, hashes = {j.video_id for j in jobs}, {j.sha256 for j in jobs}
        return sorted(v for v, h in self.clips if v not in ids and h not in hashes)


@dataclass(frozen=True)
class Unit:
    """Clips that go to one split together."""

    members: list[str]  # video ids, sorted
    classes: Counter  # videos per class (SOURCE/LABEL)
    key: str  # a hash of its content and the seed: its order among units of its size, and ties
    size: int


def assign_splits(jobs: list[ClipJob], recipe: Recipe, links: list[tuple[str, str]] = (),
                  previous: PreviousSplits | None = None) -> tuple[dict[str, Assignment], list[BuildWarning]]:
    """video_id -> Assignment for every job, and the warnings: clips that had to move, and splits
    inherited from a release of another recipe name (legitimate: a new recipe may keep an earlier
    one's folds to stay comparable, but its clips then count as removed, which a reader must
    know). RecipeError when the recipe asks for more folds than there are units to deal."""
    by_id = {j.video_id: j for j in jobs}
    members = _units(jobs, links)
    if isinstance(recipe.splits, Folds) and recipe.splits.k > len(members):
        raise RecipeError(f"splits.k is {recipe.splits.k}, but this build has {plural(len(jobs), 'clip')} "
                          f"({plural(len(members), 'unit')} once clips of one group are kept together): folds would "
                          f"stay empty; choose k <= {len(members)} (the clips ingested are kept for the next run)")
    units = [Unit(m, Counter(_class(by_id[v]) for v in m), _unit_hash(recipe.seed, m, by_id), len(m)) for m in members]
    warnings: list[BuildWarning] = []
    wanted: dict[int, str] = {}
    order = list(recipe.splits.weights())
    if previous is not None:
        if previous.name != recipe.name:
            gone = len(previous.removed(jobs))
            warnings.append(BuildWarning(
                source=", ".join(sorted(recipe.sources)), video_id=None, kind=WarningKind.PREVIOUS_OTHER_RECIPE,
                message=f"splits inherited from {previous.name} {previous.version}, a release of another recipe "
                        f"(this is {recipe.name}); {plural(gone, 'clip')} of it that this build lacks, recorded as "
                        "removed"))
        for n, unit in enumerate(units):
            had = Counter(s for v in unit.members if (s := previous.of(by_id[v])) in order)
            if had:
                wanted[n] = max(had, key=lambda s: (had[s], -order.index(s)))
    chosen, why = settle(units, recipe.splits, wanted)
    out = {}
    for n, unit in enumerate(units):
        split = chosen[n]
        for v in unit.members:
            was = previous.of(by_id[v]) if previous is not None else None
            if was in order and was != split:
                warnings.append(BuildWarning(
                    source=by_id[v].source, video_id=v, kind=WarningKind.SPLIT_MOVED,
                    message=f"was in {was}; " + why.get(n, "its group now spans splits and goes whole") +
                            f": now in {split}"))
        fold = recipe.splits.fold(split)
        group = _group_id(unit.members, by_id) if unit.size > 1 else None
        out.update({v: Assignment(split, fold, group) for v in unit.members})
    return out, warnings


def settle(units: list[Unit], splits: Splits, wanted: dict[int, str]) -> tuple[dict[int, str], dict[int, str]]:
    """Each unit's split (by index), keeping the `wanted` splits that balance allows (see the
    module's rule), and why each unit that was not allowed to stay was dealt again."""
    fresh = deal(units, splits)
    if not wanted:
        return fresh, {}
    allowed = {c: (max(b.largest, b.spread), len(b.empty)) for c, b in balance(units, fresh, splits).items()}
    kept, why = dict(wanted), {}
    while kept:
        chosen = deal(units, splits, kept)
        worse = [(b, problem) for c, b in balance(units, chosen, splits).items() if (problem := _worse(b, *allowed[c]))]
        released = False
        for b, problem in worse:  # a round releases a unit per class that is worse
            holders = [n for n in kept if units[n].classes[b.cls]]
            if holders:
                n = min(holders, key=lambda n: (b.target(kept[n]) - b.videos[kept[n]], units[n].size, units[n].key))
                why[n] = f"with its unit kept in {kept.pop(n)}: {problem}; so the unit was dealt again"
                released = True
        if not released:
            return chosen, why
    return fresh, why


def _worse(b: ClassBalance, spread: Fraction, empty: int) -> str | None:
    """What makes `b` worse than allowed (a split lacking its class, a spread too wide), or None."""
    if len(b.empty) > empty:
        return b.empty_text(b.empty[0])
    return b.spread_text() if b.spread > spread else None


def deal(units: list[Unit], splits: Splits, placed: dict[int, str] | None = None) -> dict[int, str]:
    """Each unit's split (by index): the `placed` ones where they are, the others dealt by the rule."""
    weights = splits.weights()
    whole = sum(weights.values())
    total: Counter = Counter()
    for unit in units:
        total.update(unit.classes)
    size = sum(unit.size for unit in units)
    # (whole x videos - whole x target): a class's distance from its target, in whole numbers
    off = {s: {c: -n for c, n in row.items()} for s, row in _scaled_targets(total, weights, splits).items()}
    off_all = {s: -size * w for s, w in weights.items()}
    chosen: dict[int, str] = {}

    def put(n: int, split: str) -> None:
        for c, k in units[n].classes.items():
            off[split][c] += whole * k
        off_all[split] += whole * units[n].size
        chosen[n] = split

    for n, split in sorted((placed or {}).items()):
        put(n, split)
    for n in sorted((n for n in range(len(units)) if n not in chosen), key=lambda n: (-units[n].size, units[n].key)):
        unit = units[n]
        classes = list(unit.classes.items())
        # what the sum of squared distances grows by, for the classes, then for the total
        cost = {s: (sum(k * (2 * off[s][c] + whole * k) for c, k in classes),
                    unit.size * (2 * off_all[s] + whole * unit.size)) for s in weights}
        best = min(cost.values())
        tied = [s for s in weights if cost[s] == best]
        put(n, min(tied, key=lambda s: hashlib.sha256(f"{unit.key}:{s}".encode()).digest()) if len(tied) > 1
            else tied[0])
    return chosen


def _scaled_targets(total: Counter, weights: dict[str, int], splits: Splits) -> dict[str, dict[str, int]]:
    """Each class's target in each split, times the sum of the weights (whole numbers). Folds:
    each class's share, a fraction of a video where it has fewer than k a fold. A holdout:
    whole videos, each class's share rounded so that a class's targets add up to its videos and
    the validation split's to its share of all videos, largest remainders first (ties by class):
    otherwise classes too small for a validation video of their own (2 clips at 20 %) would
    leave that split empty, each keeping its clips where its own share is nearest."""
    whole = sum(weights.values())
    if isinstance(splits, Folds):
        return {s: {c: n * w for c, n in total.items()} for s, w in weights.items()}
    target = {s: {c: n * w // whole for c, n in total.items()} for s, w in weights.items()}
    size = sum(total.values())
    short_split = {s: size * w // whole + (2 * (size * w % whole) >= whole) - sum(target[s].values())
                   for s, w in weights.items()}
    short_class = {c: n - sum(target[s][c] for s in weights) for c, n in total.items()}
    order = sorted(((c, s) for c in total for s in weights), key=lambda cs: (-(total[cs[0]] * weights[cs[1]] % whole),
                                                                             cs))
    for anywhere in (False, True):  # first where the split too is short, then wherever the class is
        for c, s in order:
            if short_class[c] > 0 and (anywhere or short_split[s] > 0):
                target[s][c] += 1
                short_class[c] -= 1
                short_split[s] -= 1
    return {s: {c: whole * n for c, n in row.items()} for s, row in target.items()}


def balance(units: list[Unit], chosen: dict[int, str], splits: Splits) -> dict[str, ClassBalance]:
    """Each class's balance over the splits when unit n goes to chosen[n]."""
    return class_balance(((chosen[n], unit.classes) for n, unit in enumerate(units)), splits)


def _units(jobs: list[ClipJob], links) -> list[list[str]]:
    """Connected components of the links, each sorted; a clip without links is its own unit."""
    parent = {j.video_id: j.video_id for j in jobs}

    def root(v: str) -> str:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b in links:
        if a in parent and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = defaultdict(list)
    for v in sorted(parent):
        members[root(v)].append(v)
    return sorted(members.values())


def _class(job: ClipJob) -> str:
    return f"{job.source}/{job.label}"


def _unit_hash(seed: int, members: list[str], by_id: dict[str, ClipJob]) -> str:
    return hashlib.sha256(f"{seed}:{min(by_id[v].sha256 for v in members)}".encode()).hexdigest()


def _group_id(members: list[str], by_id: dict[str, ClipJob]) -> str:
    """Named by its members' content, never by a sheet value (which may identify a patient)."""
    digest = hashlib.sha256("\n".join(sorted(by_id[v].sha256 for v in members)).encode()).hexdigest()
    return f"group-{digest[:12]}"
