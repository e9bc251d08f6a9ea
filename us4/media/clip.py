"""One entry point for every input kind: what the clips of a folder are, and a clip's
description and frames, whatever form the clip comes in."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .decode import DecodedFrame, decode
from .probe import VIDEO_SUFFIXES, ClipInfo, probe

INPUT_KINDS = ("video", "dicom", "image_sequence")


@dataclass(frozen=True)
class ClipRef:
    """A clip as the media layer reads it."""

    kind: str  # one of INPUT_KINDS
    files: tuple[str, ...]  # video: one file
    fps: float | None = None  # the recipe's rate, for inputs that carry none


@dataclass(frozen=True)
class FoundClip:
    rel: str  # posix path of the file (or folder) relative to the walked root
    files: tuple[str, ...]
    ref: ClipRef


@dataclass(frozen=True)
class NotAClip:
    rel: str
    reason: str


def find_clips(kind: str, root: Path, fps: float | None = None) -> tuple[list[FoundClip], list[NotAClip]]:
    """The clips under `root` (sorted; hidden files and folders skipped), and the files that are not clips."""
    if kind != "video":
        raise ValueError(f"input kind {kind!r} is not supported")
    found, other = [], []
    for rel in _walk(root):
        ext = os.path.splitext(rel)[1].lower()
        if ext not in VIDEO_SUFFIXES:
            other.append(NotAClip(rel, f"not a video file extension ({ext or 'none'})"))
            continue
        files = (str(root / rel),)
        found.append(FoundClip(rel, files, ClipRef(kind, files, fps)))
    return found, other


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, n).relative_to(root).as_posix() for n in filenames if not n.startswith("."))
    return sorted(out)


def probe_clip(ref: ClipRef) -> ClipInfo:
    return probe(ref.files[0])


def decode_clip(ref: ClipRef, indices: Sequence[int]) -> list[DecodedFrame]:
    return decode(ref.files[0], indices)
