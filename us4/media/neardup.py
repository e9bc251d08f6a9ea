"""Near-duplicate frames: close 64-bit difference hashes, confirmed on thumbnails.

Shared by the build (clips joined into groups by the split rule) and by `us4 audit`
(pairs across splits), so both call the same pairs near-duplicates.
"""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_DIFFERENCE", "MAX_DISTANCE", "close_pairs", "thumb_difference"]

MAX_DISTANCE = 6  # bits of 64 by which two frames' hashes may differ to be a candidate pair
MAX_DIFFERENCE = 4.0  # mean absolute grey-level difference of thumbnails that confirms a pair
_CHUNK = 2048  # rows of the pairwise distance matrix computed at once (bounded memory)


def close_pairs(hashes: np.ndarray, codes: np.ndarray, max_distance: int = MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """(distance, i, j) with i < j for every pair whose hashes lie within `max_distance`
    bits and whose `codes` differ (other clips, or other splits), in row order."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    codes = np.asarray(codes)
    out = []
    for start in range(0, len(hashes), _CHUNK):
        dist = np.bitwise_count(hashes[start:start + _CHUNK, None] ^ hashes[None, :])
        close = (dist <= max_distance) & (codes[start:start + _CHUNK, None] != codes[None, :])
        for i, j in zip(*np.nonzero(close)):
            if start + i < j:  # each unordered pair once
                out.append((int(dist[i, j]), int(start + i), int(j)))
    return out


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
