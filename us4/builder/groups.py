"""Clips the split rule keeps together: those sharing near-duplicate frames (the audit's
test: close hashes confirmed on thumbnails), and those sharing a value of the recipe's
grouping column. Read from the clip cache (hashes and thumbnails, never frame bytes)."""
from __future__ import annotations

import numpy as np

from ..media import THUMB
from ..media.neardup import MAX_DIFFERENCE, close_pairs, thumb_difference
from .cache import ClipCache
from .plan import ClipJob


def near_duplicate_links(jobs: list[ClipJob], cache: ClipCache) -> list[tuple[str, str]]:
    """Pairs of video ids (sorted, unique) with at least one near-duplicate frame between them.

    Hashes of every frame are compared; thumbnails are read only for candidate pairs."""
    hashes, codes, rows = [], [], []
    for code, job in enumerate(jobs):
        table, _ = cache.read_result(job.key, ["phash"])
        hashes.append(table.column("phash").to_numpy())
        codes.append(np.full(table.num_rows, code))
        rows.append(np.arange(table.num_rows))
    if not hashes:
        return []
    code_of, row_of = np.concatenate(codes), np.concatenate(rows)
    candidates = close_pairs(np.concatenate(hashes), code_of)
    thumbs: dict[int, np.ndarray] = {}  # clip code -> its thumbnails, for clips in a candidate pair
    for code in sorted({int(code_of[k]) for _, i, j in candidates for k in (i, j)}):
        table, _ = cache.read_result(jobs[code].key, ["thumb"])
        thumbs[code] = np.frombuffer(b"".join(table.column("thumb").to_pylist()), np.uint8).reshape(-1, THUMB, THUMB)
    links = set()
    for _, i, j in candidates:
        a, b = int(code_of[i]), int(code_of[j])
        pair = tuple(sorted((jobs[a].video_id, jobs[b].video_id)))
        if pair not in links and thumb_difference(thumbs[a][row_of[i]], thumbs[b][row_of[j]]) <= MAX_DIFFERENCE:
            links.add(pair)
    return sorted(links)


def column_links(jobs: list[ClipJob]) -> list[tuple[str, str]]:
    """Pairs that share a value of the grouping column (chained: each to the first of its value)."""
    first: dict[str, str] = {}
    links = []
    for job in jobs:
        if job.group_key is None:
            continue
        head = first.setdefault(job.group_key, job.video_id)
        if head != job.video_id:
            links.append((head, job.video_id))
    return links
