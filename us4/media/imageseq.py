"""Image sequences: a folder of numbered frame files (PNG, JPEG, TIFF) is one clip.

Frames are in natural order of file name (frame2 before frame10). When every name
carries a number (its last run of digits), the numbers must run without gaps or
repeats: frame_001, frame_002, frame_004 is an error naming frame_004. Images carry no
rate, so the recipe's fps is required. Probing reads every image header (size, mode),
never pixels; decoding reads the wanted files only.

Pixels, always uint8: grey modes (L, 1, LA) as grey; 16-bit grey (I;16*, or I holding
values up to 65535) by the same Bits Stored range rule as DICOM (`pixels.range_to_8bit`,
16 bits); colour modes (RGB, RGBA, P, CMYK, YCbCr) through Pillow's integer conversion to
RGB, alpha dropped. A colour image whose three channels are equal everywhere is grey
(`grey` only); otherwise the frame keeps `rgb` and `grey = to_grey(rgb)`. Frames are
used as stored (an EXIF orientation is not applied).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .gate import check_frame_size, frame_indices, reading
from .pixels import range_to_8bit, to_grey
from .types import ClipInfo, DecodedFrame, MediaError
from .walk import natural_key, rel_posix, walk_files

__all__ = ["IMAGE_SUFFIXES", "decode_sequence", "find_sequences", "probe_sequence", "sort_frames"]

#: File suffixes (lower case) of frame images.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_GREY_MODES = {"L", "1", "LA", "La"}
_DEEP_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_COLOUR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr"}
_PHOTOMETRIC = {**{m: "MONOCHROME2" for m in _GREY_MODES | _DEEP_MODES},
                **{m: "RGB" for m in _COLOUR_MODES - {"P", "PA"}}, "P": "PALETTE COLOR", "PA": "PALETTE COLOR"}


def sort_frames(files: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """`files` in natural order of their names (the frame order of a sequence)."""
    return sorted((Path(f) for f in files), key=lambda p: natural_key(p.name))


def _check_numbering(files: list[Path]) -> None:
    """Gaps or repeats in the frame numbers are errors, when every name has a number."""
    numbers = []
    for p in files:
        m = _NUMBER.search(p.stem)
        if m is None:
            return  # unnumbered names: natural order is all there is
        numbers.append(int(m.group(1)))
    for prev, cur, p, before in zip(numbers, numbers[1:], files[1:], files):
        if cur == prev:
            raise MediaError(p, f"two frames numbered {cur} ({before.name} and {p.name})")
        if cur != prev + 1:
            raise MediaError(p, f"gap in the frame numbering: {before.name} is followed by {p.name}")


def _folder(files: list[Path]) -> Path:
    return files[0].parent


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, UnidentifiedImageError):
        return "unreadable frame: not an image Pillow can identify"
    if isinstance(exc, Image.DecompressionBombError):  # beyond Pillow's own limit (2 x 89 M pixels)
        return f"frame too large to open ({exc})"
    return f"unreadable frame: {type(exc).__name__}: {exc}"


def _open(path: Path) -> Image.Image:
    with reading(path, _unreadable, (OSError, ValueError, Image.DecompressionBombError)):
        return Image.open(path)


def _files(files: Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not files:
        raise ValueError("an image sequence needs at least one file")
    paths = [Path(f) for f in files]
    _check_numbering(paths)
    return paths


def _rate(paths: list[Path], fps: float | None) -> float:
    if not fps:
        raise MediaError(_folder(paths), "no frame rate: image sequences carry none, the recipe must state fps")
    return float(fps)


def probe_sequence(files: Sequence[str | os.PathLike[str]], fps: float | None,
                   max_pixels: int | None = None) -> ClipInfo:
    """Describe an image sequence given its frame files in frame order (`sort_frames`).

    Reads every image header, no pixels. `path` is the folder of the first frame.
    MediaError for a missing rate, a gap or repeat in the numbering, a frame Pillow
    cannot identify, an unsupported image mode, mixed sizes, or frames of more than
    `max_pixels` pixels, naming the file at fault.
    """
    paths = _files(files)
    rate = _rate(paths, fps)
    size = None
    formats: list[str] = []
    modes: list[str] = []
    for p in paths:
        with _open(p) as img:
            if img.mode not in _PHOTOMETRIC:
                raise MediaError(p, f"unsupported image mode {img.mode}")
            if size is None:
                check_frame_size(p, *img.size, max_pixels)
                size = img.size
            elif img.size != size:
                raise MediaError(p, f"mixed sizes: {p.name} is {img.size[0]}x{img.size[1]}, "
                                    f"{paths[0].name} is {size[0]}x{size[1]}")
            formats.append((img.format or p.suffix.lstrip(".")).lower())
            modes.append(img.mode)
    n = len(paths)
    first_mode = modes[0]
    return ClipInfo(
        path=str(_folder(paths)),
        container="image_sequence",
        codec="+".join(sorted(set(formats))),
        fps=rate,
        n_frames=n,
        duration=n / rate,
        width=size[0],
        height=size[1],
        rotation=0,
        pix_fmt=first_mode,
        frames_counted=True,
        kind="image_sequence",
        photometric=_PHOTOMETRIC[first_mode],
        bits=16 if first_mode in _DEEP_MODES else 8,
        timing="recipe",
    )


def decode_sequence(files: Sequence[str | os.PathLike[str]], indices: Sequence[int],
                    fps: float | None) -> list[DecodedFrame]:
    """The frames at `indices` (positions in `files`), reading those files only.

    Indices past the last frame are left out (MediaError when none is left). Every
    decoded frame must have the first frame's size. MediaError names the file at fault.
    """
    wanted = frame_indices(indices)
    if not wanted:
        return []
    paths = _files(files)
    rate = _rate(paths, fps)
    present = [i for i in wanted if i < len(paths)]
    if not present:
        raise MediaError(_folder(paths), f"only {len(paths)} frames, none of the wanted indices "
                                         f"(first wanted {wanted[0]})")
    with _open(paths[0]) as img:
        size = img.size
    out = []
    for i in present:
        p = paths[i]
        with _open(p) as img:
            if img.size != size:
                raise MediaError(p, f"mixed sizes: {p.name} is {img.size[0]}x{img.size[1]}, "
                                    f"{paths[0].name} is {size[0]}x{size[1]}")
            with reading(p, _unreadable, (OSError, ValueError, SyntaxError)):
                img.load()
            out.append(_frame(img, p, i, i / rate))
    return out


def _frame(img: Image.Image, path: Path, index: int, pts: float) -> DecodedFrame:
    mode = img.mode
    if mode in ("L", "1", "LA", "La"):
        grey = np.array(img.getchannel(0) if mode in ("LA", "La") else img.convert("L") if mode == "1" else img)
        return DecodedFrame(index=index, pts=pts, grey=grey)
    if mode in _DEEP_MODES:
        arr = np.array(img)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise MediaError(path, f"unsupported image mode {mode} (values beyond 16 bits)")
        return DecodedFrame(index=index, pts=pts, grey=range_to_8bit(arr, 16))
    if mode not in _COLOUR_MODES:
        raise MediaError(path, f"unsupported image mode {mode}")
    rgb = np.array(img if mode == "RGB" else img.convert("RGB"))
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return DecodedFrame(index=index, pts=pts, grey=np.ascontiguousarray(rgb[..., 0]))
    return DecodedFrame(index=index, pts=pts, grey=to_grey(rgb), rgb=rgb)


def find_sequences(root: str | os.PathLike[str],
                   files: list[Path] | None = None) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, str]]]:
    """The image sequences under `root`: (clips, others), both sorted by rel.

    Each folder holding image files is one clip (rel: the folder, "." for `root`), its
    files in natural order; every other file is (rel, reason). `files`: the listing of
    `root`, where the caller has it.
    """
    root = Path(root)
    folders: dict[Path, list[Path]] = {}
    others = []
    for path in walk_files(root) if files is None else files:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            folders.setdefault(path.parent, []).append(path)
        else:
            suffix = path.suffix.lower()
            others.append((rel_posix(path, root),
                           f"not an image frame (suffix {suffix!r})" if suffix else "not an image frame (no suffix)"))
    clips = [(rel_posix(folder, root), tuple(str(p) for p in sort_frames(files))) for folder, files in folders.items()]
    return sorted(clips), sorted(others)
