"""Near-duplicate frames: close 64-bit difference hashes, confirmed on thumbnails.

Shared by the build (clips joined into groups by the split rule) and by `us4 audit`
(pairs across splits, and across two releases with `--against`), so all call the same
pairs near-duplicates.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["MAX_DIFFERENCE", "MAX_DISTANCE", "close_pairs", "close_pairs_between", "thumb_difference",
           "thumb_differences"]

MAX_DISTANCE = 6  # bits of 64 by which two frames' hashes may differ to be a candidate pair
MAX_DIFFERENCE = 4.0  # mean absolute grey-level difference of thumbnails that confirms a pair
_CHUNK = 1024  # side of the block of the pairwise distance matrix computed at once: memory stays flat


def close_pairs(hashes: np.ndarray, codes: np.ndarray, max_distance: int = MAX_DISTANCE) -> Iterator[tuple[int, int, int]]:
    """(distance, i, j) with i < j for every pair whose hashes lie within `max_distance`
    bits and whose `codes` differ (other clips, or other splits), block by block of the
    distance matrix, so memory stays flat however many pairs there are."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    codes = np.asarray(codes)
    for dist, i, j in _close_blocks(hashes, hashes, max_distance, codes, within=True):
        yield from zip(dist.tolist(), i.tolist(), j.tolist())


def close_pairs_between(a: np.ndarray, b: np.ndarray,
                        max_distance: int = MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance, i, j) arrays of every pair of a hash `a[i]` and a hash `b[j]` (two releases)
    within `max_distance` bits, found block by block: memory is that of the pairs found."""
    parts = list(_close_blocks(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64), max_distance))
    if not parts:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]


def _close_blocks(a: np.ndarray, b: np.ndarray, max_distance: int, codes: np.ndarray | None = None,
                  within: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of the a x b distance matrix, (distance, i, j) of its close pairs. `within`: `a`
    is `b`, and each unordered pair comes once (i < j) and only where `codes` differ."""
    for s in range(0, len(a), _CHUNK):
        for t in range(s if within else 0, len(b), _CHUNK):  # within: blocks on and above the diagonal
            dist = np.bitwise_count(a[s:s + _CHUNK, None] ^ b[None, t:t + _CHUNK])
            close = dist <= max_distance
            if codes is not None:
                close &= codes[s:s + _CHUNK, None] != codes[None, t:t + _CHUNK]
            i, j = np.nonzero(close)
            if within:
                upper = s + i < t + j
                i, j = i[upper], j[upper]
            if len(i):
                yield dist[i, j], s + i, t + j


def thumb_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute grey-level difference of thumbnails, pair by pair (stacks of them); summed as
    integers, which `mean` would do through a float64 copy of the whole stack."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return diff.sum(axis=(-2, -1), dtype=np.int64) / (diff.shape[-2] * diff.shape[-1])


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails."""
    return float(thumb_differences(a, b))
