"""Whole videos to splits: never a frame. Deterministic from the recipe's seed.

Assignment covers every planned clip, including those that later fail, so that one
clip failing on one machine does not move any other clip to another split.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from ..recipe import Recipe
from .plan import ClipJob


def _order(seed: int, video_id: str) -> str:
    return hashlib.sha256(f"{seed}:{video_id}".encode()).hexdigest()


def assign_splits(jobs: Iterable[ClipJob], recipe: Recipe) -> dict[str, tuple[str, int | None]]:
    """video_id -> (split name, fold or None).

    folds: within each class, videos in seeded-hash order are dealt round-robin over
    k folds, each class starting where the last left off, so folds stay balanced
    in size and stratified by class. holdout: the same dealing with an accumulator,
    so that a `validation` fraction of each class (carried across classes, so that
    small classes still contribute) goes to `validation`.
    """
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for job in jobs:
        groups[(job.source, job.label)].append(job.video_id)
    out: dict[str, tuple[str, int | None]] = {}
    kind = recipe.splits["kind"]
    offset = 0
    carry = 0.0
    for key in sorted(groups):
        videos = sorted(groups[key], key=lambda v: _order(recipe.seed, v))
        if kind == "folds":
            k = recipe.splits["k"]
            for i, video in enumerate(videos):
                fold = (offset + i) % k
                out[video] = (f"fold{fold}", fold)
            offset += len(videos)
        else:
            for video in videos:
                carry += recipe.splits["validation"]
                held_out = carry >= 1.0
                carry -= held_out
                out[video] = ("validation" if held_out else "train", None)
    return out
