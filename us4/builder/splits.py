"""Whole videos, and whole groups of videos, to splits: never a frame. Deterministic.

Units are groups: clips joined by the split rule (near-duplicate frames, a sheet
column) or a clip alone. A unit that holds clips of a previous release keeps their
split. Every other unit is dealt class by class: each class has a quota per split, its
share of the class's videos plus what earlier classes left over (so small classes still
fill a 20 % validation split, and folds stay equal in size), and its units, largest
first, go to the split furthest below its quota, ties broken by the unit's content hash
and the seed. Assignment covers every planned clip, those that later fail included, so
one clip failing on one machine moves no other clip. Folds are never left empty: more
folds than units to deal is an error.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

from ..contract.lock import BuildWarning, WarningKind
from ..errors import RecipeError
from ..recipe import Recipe
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


def split_shares(recipe: Recipe) -> dict[str, float]:
    """Each split's share of the videos, in the recipe's order."""
    if recipe.splits["kind"] == "folds":
        k = recipe.splits["k"]
        return {f"fold{i}": 1 / k for i in range(k)}
    v = float(recipe.splits["validation"])
    return {"train": 1 - v, "validation": v}


def assign_splits(jobs: list[ClipJob], recipe: Recipe, links: list[tuple[str, str]] = (),
                  previous: PreviousSplits | None = None) -> tuple[dict[str, Assignment], list[BuildWarning]]:
    """video_id -> Assignment for every job, and the warnings: clips that had to move, and splits
    inherited from a release of another recipe name (legitimate: a new recipe may keep an earlier
    one's folds to stay comparable, but its clips then count as removed, which a reader must
    know). RecipeError when the recipe asks for more folds than there are units to deal."""
    by_id = {j.video_id: j for j in jobs}
    units = _units(jobs, links)
    if recipe.splits["kind"] == "folds" and recipe.splits["k"] > len(units):
        raise RecipeError(f"splits.k is {recipe.splits['k']}, but this build has {plural(len(jobs), 'clip')} "
                          f"({plural(len(units), 'unit')} once clips of one group are kept together): folds would "
                          f"stay empty; choose k <= {len(units)} (the clips ingested are kept for the next run)")
    shares = split_shares(recipe)
    counts: dict[str, Counter] = {s: Counter() for s in shares}
    totals: Counter = Counter()
    chosen: dict[int, str] = {}
    warnings: list[BuildWarning] = []
    if previous is not None and previous.name != recipe.name:
        gone = len(previous.removed(jobs))
        warnings.append(BuildWarning(
            source=", ".join(sorted(recipe.sources)), video_id=None, kind=WarningKind.PREVIOUS_OTHER_RECIPE,
            message=f"splits inherited from {previous.name} {previous.version}, a release of another recipe (this "
                    f"is {recipe.name}); {plural(gone, 'clip')} of it that this build lacks, recorded as removed"))
    for n, members in enumerate(units):
        if previous is None:
            break
        before = {v: previous.of(by_id[v]) for v in members}
        kept = Counter(s for s in before.values() if s in shares)
        if not kept:
            continue
        split = max(kept, key=lambda s: (kept[s], -list(shares).index(s)))
        chosen[n] = split
        for v, s in sorted(before.items()):
            if s is not None and s != split:
                warnings.append(BuildWarning(
                    source=by_id[v].source, video_id=v, kind=WarningKind.SPLIT_MOVED,
                    message=f"was in {s}; its group now spans splits and goes to {split} whole"))
        _tally(counts, totals, split, members, by_id)
    free = [n for n in range(len(units)) if n not in chosen]
    keys = {n: _unit_hash(recipe.seed, units[n], by_id) for n in free}
    by_class: dict[str, list[int]] = defaultdict(list)
    for n in free:
        by_class[_class_of(units[n], by_id)].append(n)
    live = [s for s, share in shares.items() if share > 0]
    carry = dict.fromkeys(live, 0.0)
    for cls in sorted(set(by_class) | {c for s in counts.values() for c in s}):
        quota = _quota(sum(counts[s][cls] for s in shares) + sum(len(units[n]) for n in by_class.get(cls, [])),
                       {s: shares[s] for s in live}, carry)
        for n in sorted(by_class.get(cls, []), key=lambda n: (-len(units[n]), keys[n])):
            split = max(live, key=lambda s: (quota[s] - counts[s][cls], -totals[s] / shares[s],
                                             hashlib.sha256(f"{keys[n]}:{s}".encode()).hexdigest()))
            chosen[n] = split
            _tally(counts, totals, split, units[n], by_id)
    out = {}
    for n, members in enumerate(units):
        split = chosen[n]
        fold = int(split[4:]) if recipe.splits["kind"] == "folds" else None
        group = _group_id(members, by_id) if len(members) > 1 else None
        out.update({v: Assignment(split, fold, group) for v in members})
    return out, warnings


def _quota(n: int, shares: dict[str, float], carry: dict[str, float]) -> dict[str, int]:
    """Whole videos per split for a class of `n`: its shares plus the carried remainders,
    rounded so they sum to `n` (largest remainders first); `carry` keeps what is left over."""
    want = {s: n * share + carry[s] for s, share in shares.items()}
    quota = {s: int(w) for s, w in want.items()}
    for s in sorted(shares, key=lambda s: -(want[s] - quota[s]))[: n - sum(quota.values())]:
        quota[s] += 1
    carry.update({s: want[s] - quota[s] for s in shares})
    return quota


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


def _class_of(members: list[str], by_id: dict[str, ClipJob]) -> str:
    """A unit's class for stratification: its most common (source, label); ties by name."""
    tally = Counter(f"{by_id[v].source}/{by_id[v].label}" for v in members)
    return min(tally, key=lambda c: (-tally[c], c))


def _tally(counts: dict[str, Counter], totals: Counter, split: str, members: list[str], by_id) -> None:
    for v in members:
        counts[split][f"{by_id[v].source}/{by_id[v].label}"] += 1
        totals[split] += 1


def _unit_hash(seed: int, members: list[str], by_id: dict[str, ClipJob]) -> str:
    return hashlib.sha256(f"{seed}:{min(by_id[v].sha256 for v in members)}".encode()).hexdigest()


def _group_id(members: list[str], by_id: dict[str, ClipJob]) -> str:
    """Named by its members' content, never by a sheet value (which may identify a patient)."""
    digest = hashlib.sha256("\n".join(sorted(by_id[v].sha256 for v in members)).encode()).hexdigest()
    return f"group-{digest[:12]}"
