"""Clips the split rule keeps together: those sharing near-duplicate frames (the audit's
test: close hashes confirmed on thumbnails), and those sharing a value of the recipe's
grouping column. Read from the clip cache (hashes and thumbnails, never frame bytes)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import CacheError
from ..media import THUMB
from ..media.neardup import MAX_DIFFERENCE, close_pairs, thumb_difference
from .cache import ClipCache
from .plan import ClipJob


def near_duplicate_links(jobs: list[ClipJob], cache: ClipCache) -> list[tuple[str, str]]:
    """Pairs of video ids (sorted, unique) with at least one near-duplicate frame between them.

    Hashes of every frame are compared; thumbnails are read only for candidate pairs, a few
    clips' at a time (memory stays flat however many frames are candidates)."""
    hashes, codes, rows = [], [], []
    for code, job in enumerate(jobs):
        table, _ = cache.read_index(job.key)
        hashes.append(table.column("phash").to_numpy())
        codes.append(np.full(table.num_rows, code))
        rows.append(np.arange(table.num_rows))
    if not hashes:
        return []
    code_of, row_of = np.concatenate(codes), np.concatenate(rows)

    @lru_cache(maxsize=16)
    def thumbs(code: int) -> np.ndarray:
        """A clip's thumbnails as one array over the memory-mapped cache file (no copy)."""
        column = cache.read_pixels(jobs[code].key, "thumb")
        if column.null_count:  # the key says thumbnails (ClipParams.thumbnails): us4 never wrote this
            raise CacheError(f"{cache.pixels_path(jobs[code].key)}: cached without the thumbnails its key asks "
                             "for; delete it and build again")
        values = np.frombuffer(column.buffers()[2], np.uint8)
        start = column.offset * THUMB * THUMB
        return values[start:start + len(column) * THUMB * THUMB].reshape(-1, THUMB, THUMB)

    links: set[tuple[str, str]] = set()
    for _, i, j in close_pairs(np.concatenate(hashes), code_of):
        a, b = int(code_of[i]), int(code_of[j])
        pair = tuple(sorted((jobs[a].video_id, jobs[b].video_id)))
        if pair not in links and thumb_difference(thumbs(a)[row_of[i]], thumbs(b)[row_of[j]]) <= MAX_DIFFERENCE:
            links.add(pair)
    return sorted(links)


def content_links(jobs: list[ClipJob]) -> list[tuple[str, str]]:
    """Clips of one file: the views of a multi-view DICOM file, or the same bytes under two
    names. Always one unit, whatever the recipe's group rule: splitting them would put the
    same pixels on both sides."""
    return _links_by(jobs, lambda job: job.sha256)


def column_links(jobs: list[ClipJob]) -> list[tuple[str, str]]:
    """Pairs that share a value of the grouping column."""
    return _links_by(jobs, lambda job: job.group_key)


def _links_by(jobs: list[ClipJob], key) -> list[tuple[str, str]]:
    """Each clip linked to the first clip of its key (chained); clips without a key are alone."""
    first: dict[str, str] = {}
    links = []
    for job in jobs:
        if (k := key(job)) is None:
            continue
        head = first.setdefault(k, job.video_id)
        if head != job.video_id:
            links.append((head, job.video_id))
    return links
