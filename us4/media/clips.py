"""One entry point for every input kind: which clips a folder holds, what each declares,
and the pixels of its wanted frames.

    >>> found, others = find_clips("dicom", Path("raw/liver"))          # doctest: +SKIP
    >>> info = probe_clip(found[0].ref)
    >>> frames = decode_clip(found[0].ref, [0, 10, 20])

A `ClipRef` is all the build needs to hand a worker; `FoundClip.rel` is the clip's
name relative to the raw folder (a file, or a folder for a series or a sequence).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .decode import decode
from .imageseq import decode_sequence, find_sequences, probe_sequence
from .probe import VIDEO_SUFFIXES, probe
from .types import ClipInfo, DecodedFrame
from .walk import list_files, rel_posix

__all__ = ["INPUT_KINDS", "ClipRef", "FoundClip", "ListedClip", "NotAClip", "decode_clip", "find_clips", "list_clips",
           "probe_clip"]

INPUT_KINDS = ("video", "dicom", "image_sequence")


@dataclass(frozen=True)
class ClipRef:
    """What makes one clip: its kind, its files in frame order, and the recipe's rate.

    video: one container file. dicom: one multi-frame (or single-frame) file, or the
    single-frame files of one series. image_sequence: the frame files. `fps` is
    required for image sequences and used for DICOM only when the file carries no timing;
    videos ignore it. Paths are kept as given (as strings).
    """

    kind: str
    files: tuple[str, ...]
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {self.kind!r}; expected one of {INPUT_KINDS}")
        if isinstance(self.files, (str, os.PathLike)):
            raise TypeError("ClipRef.files is a sequence of paths, not one path")
        files = tuple(os.fspath(f) for f in self.files)
        if not files:
            raise ValueError("a clip needs at least one file")
        if self.kind == "video" and len(files) != 1:
            raise ValueError(f"a video clip is one file, got {len(files)}")
        object.__setattr__(self, "files", files)
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) \
                    or not math.isfinite(self.fps) or self.fps <= 0:
                raise ValueError(f"ClipRef.fps must be a positive number, got {self.fps!r}")
            object.__setattr__(self, "fps", float(self.fps))


@dataclass(frozen=True)
class FoundClip:
    """A clip found under a root: `rel` (posix, relative to the root), `files` (absolute,
    in frame order) and the `ref` to probe and decode it."""

    rel: str
    files: tuple[str, ...]
    ref: ClipRef


@dataclass(frozen=True)
class NotAClip:
    """A file under a root that is no clip of the kind looked for, and why (no header values).
    `refused`: never opened (a FIFO, a socket, a device, a link leading outside the root): a
    failure of whatever it was meant to be, not a file to leave out."""

    rel: str
    reason: str
    refused: bool = False


def probe_clip(ref: ClipRef, max_pixels: int | None = None) -> ClipInfo:
    """Describe the clip `ref` names (see ClipInfo); MediaError naming the file and the cause,
    or saying that its frames have more than `max_pixels` pixels (read from its headers before
    any frame is decoded)."""
    if ref.kind == "video":
        return probe(ref.files[0], max_pixels)
    if ref.kind == "dicom":
        from .dicom import probe_dicom  # pydicom (0.15 s to import) only where a source is DICOM

        return probe_dicom(ref.files, ref.fps, max_pixels)
    return probe_sequence(ref.files, ref.fps, max_pixels)


def decode_clip(ref: ClipRef, indices: Sequence[int]) -> list[DecodedFrame]:
    """Decode the frames at `indices` of the clip `ref` names, and no others (see `decode`,
    `dicom.decode_dicom`, `imageseq.decode_sequence`)."""
    if ref.kind == "video":
        return decode(ref.files[0], indices)
    if ref.kind == "dicom":
        from .dicom import decode_dicom

        return decode_dicom(ref.files, indices, ref.fps)
    return decode_sequence(ref.files, indices, ref.fps)


def _find_videos(root: Path, files: list[Path]) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, str]]]:
    clips, others = [], []
    for path in files:
        rel = rel_posix(path, root)
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            clips.append((rel, (str(path),)))
        else:
            others.append((rel, f"not a video file (suffix {suffix!r})" if suffix else "not a video file (no suffix)"))
    return clips, others


def find_clips(kind: str, root: str | os.PathLike[str],
               fps: float | None = None) -> tuple[list[FoundClip], list[NotAClip]]:
    """The clips of `kind` under `root`, and the files that are not such clips, both sorted by rel.

    The tree is listed once (`walk.list_files`), hidden files and folders skipped; special
    files and links leading outside `root` are never opened: they come back as refused
    `NotAClip`s. video: each
    file with a video suffix. dicom: see `dicom.find_dicom` (headers only, never pixels).
    image_sequence: each folder holding png/jpg/jpeg/tif/tiff files, in natural order.
    `fps` goes into every ref. Raises NotADirectoryError when `root` is not a folder.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {INPUT_KINDS}")
    root = Path(root).absolute()
    if kind == "dicom":
        from .dicom import find_dicom as finder
    else:
        finder = {"video": _find_videos, "image_sequence": find_sequences}[kind]
    listing = list_files(root)
    clips, others = finder(root, listing.files)
    found = [FoundClip(rel, files, ClipRef(kind, files, fps)) for rel, files in clips]
    refused = [NotAClip(rel_posix(path, root), reason, refused=True) for path, reason in listing.refused]
    return found, sorted([NotAClip(rel, reason) for rel, reason in others] + refused, key=lambda o: o.rel)


@dataclass(frozen=True)
class ListedClip:
    """A clip given or found (`ref`), or a DICOM file found that is no clip (`ref` None, `problem` why)."""

    path: str
    ref: ClipRef | None
    problem: str = ""


def list_clips(paths: Sequence[str | os.PathLike[str]], fps: float | None = None) -> list[ListedClip]:
    """The clips named by `paths` (what `us4 probe` lists), in the order given, each folder's sorted.

    A file is a DICOM clip when it looks like DICOM (suffix or DICM marker), else a video.
    A folder is walked (`find_clips` of every kind) for videos, DICOM clips (series grouped)
    and image sequences; DICOM files that are no clip are listed with the reason.
    """
    from .dicom import is_dicom_file

    out: list[ListedClip] = []
    for arg in paths:
        p = Path(arg)
        if not p.is_dir():
            out.append(ListedClip(str(p), ClipRef("dicom" if is_dicom_file(p) else "video", (str(p),), fps)))
            continue
        rows: list[tuple[str, ClipRef | None, str]] = []
        for kind in INPUT_KINDS:
            found, others = find_clips(kind, p, fps)
            rows += [(f.rel, f.ref, "") for f in found]
            if kind == "dicom":
                rows += [(o.rel, None, o.reason) for o in others if is_dicom_file(p / o.rel)]
        out += [ListedClip(str(p) if rel == "." else str(p / rel), ref, problem)
                for rel, ref, problem in sorted(rows, key=lambda r: (r[0], r[2]))]
    return out
