"""Near-duplicate frames: close 64-bit difference hashes, confirmed on thumbnails.

Shared by the build (clips joined into groups by the split rule) and by `us4 audit`
(pairs across splits), so both call the same pairs near-duplicates.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["MAX_DIFFERENCE", "MAX_DISTANCE", "close_pairs", "thumb_difference"]

MAX_DISTANCE = 6  # bits of 64 by which two frames' hashes may differ to be a candidate pair
MAX_DIFFERENCE = 4.0  # mean absolute grey-level difference of thumbnails that confirms a pair
_CHUNK = 1024  # side of the block of the pairwise distance matrix computed at once: memory stays flat


def close_pairs(hashes: np.ndarray, codes: np.ndarray, max_distance: int = MAX_DISTANCE) -> Iterator[tuple[int, int, int]]:
    """(distance, i, j) with i < j for every pair whose hashes lie within `max_distance`
    bits and whose `codes` differ (other clips, or other splits), block by block of the
    distance matrix, so memory stays flat however many pairs there are."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    codes = np.asarray(codes)
    n = len(hashes)
    for a in range(0, n, _CHUNK):  # blocks on and above the diagonal: each unordered pair once
        for b in range(a, n, _CHUNK):
            dist = np.bitwise_count(hashes[a:a + _CHUNK, None] ^ hashes[None, b:b + _CHUNK])
            close = (dist <= max_distance) & (codes[a:a + _CHUNK, None] != codes[None, b:b + _CHUNK])
            for i, j in zip(*np.nonzero(close)):
                if a + i < b + j:
                    yield int(dist[i, j]), int(a + i), int(b + j)


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
