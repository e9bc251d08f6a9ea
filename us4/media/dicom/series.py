"""Finding DICOM clips in a folder, from headers alone: every multi-frame file is a clip, and the
single-frame files of one series in one folder make one clip."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..types import MediaError
from ..walk import natural_key, rel_posix, walk_files
from .header import not_a_clip, read_header
from .policy import as_int

__all__ = ["find_dicom"]


def find_dicom(root: str | os.PathLike[str],
               files: list[Path] | None = None) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, str]]]:
    """The DICOM clips under `root`, from headers alone (pixels are never read).

    Returns (clips, others), both sorted by `rel`: clips as (rel, files in frame order),
    others as (rel, reason). Every multi-frame file is a clip. Single-frame files sharing
    a Series Instance UID in one folder form one clip, ordered by Instance Number; files
    without a number follow those with one, and ties (equal or absent numbers) go by
    natural order of file name. A single-frame file alone in its series (or without a
    Series Instance UID) is a clip by itself. A series' rel is its folder ("." for
    `root`), or its first file's rel when the folder holds several series. `rel` and
    reasons never carry header values. `files`: the listing of `root`, where the caller has it.
    """
    root = Path(root)
    clips: list[tuple[str, tuple[str, ...]]] = []
    others: list[tuple[str, str]] = []
    series: dict[tuple[Path, str], list[tuple[int | None, Path]]] = {}
    for path in walk_files(root) if files is None else files:
        rel = rel_posix(path, root)
        try:
            header = read_header(path)
        except MediaError as exc:
            others.append((rel, exc.reason))
            continue
        reason = not_a_clip(header)
        if reason:
            others.append((rel, reason))
            continue
        frames = as_int(header.ds.get("NumberOfFrames", 1) or 1)
        uid = str(header.ds.get("SeriesInstanceUID", "") or "")
        if frames != 1 or not uid:
            clips.append((rel, (str(path),)))
            continue
        series.setdefault((path.parent, uid), []).append((as_int(header.ds.get("InstanceNumber")), path))
    several = Counter(folder for (folder, _), members in series.items() if len(members) > 1)
    for (folder, _), members in series.items():
        members.sort(key=lambda m: (m[0] is None, m[0] or 0, natural_key(m[1].name)))
        paths = tuple(str(p) for _, p in members)
        if len(members) == 1 or several[folder] > 1:
            rel = rel_posix(members[0][1], root)
        else:
            rel = rel_posix(folder, root)
        clips.append((rel, paths))
    return sorted(clips), sorted(others)
