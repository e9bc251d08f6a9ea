"""DICOM pixel decoding: the wanted frames of a clip, one at a time through the plugin pinned
for its transfer syntax, to uint8 by the integer rules of the package doc (VOI window, Bits
Stored range, MONOCHROME1 inversion, palette, YBR)."""
from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
from pydicom.pixels import apply_color_lut, as_pixel_options, get_decoder
from pydicom.uid import UID

from ..gate import frame_indices, reading
from ..pixels import range_to_8bit, thresholds_to_8bit, to_grey, ycbcr_to_rgb
from ..types import DecodedFrame, MediaError
from .header import DEFLATED, SYNTAXES, Image, check_series, frame_timing, load
from .policy import first_value

__all__ = ["decode_dicom"]

_GREY = ("MONOCHROME1", "MONOCHROME2")


def decode_dicom(files: Sequence[str | os.PathLike[str]], indices: Sequence[int],
                 fps: float | None = None) -> list[DecodedFrame]:
    """Decode the frames at `indices` of a DICOM clip (see `probe_dicom`), and only those.

    A multi-frame file is decoded frame by frame through its pinned plugin; a series
    reads the header of its first file and of the wanted files only. Indices past the
    last frame are left out; MediaError when none of them exists, or when a file is
    unreadable, its pixel data disagree with its header, or a frame cannot be decoded.
    """
    wanted = frame_indices(indices)
    if not wanted:
        return []
    if not files:
        raise ValueError("a DICOM clip needs at least one file")
    first = load(files[0])
    n = first.frames if len(files) == 1 else len(files)
    _, _, pts = frame_timing(first.header.ds, n, fps, len(files) > 1, first.header.path)
    present = [i for i in wanted if i < n]
    if not present:
        raise MediaError(first.header.path, f"only {n} frames, none of the wanted indices (first wanted {wanted[0]})")
    if len(files) == 1:
        return _decoded(first, present, present, pts)
    out = []
    for i in present:
        image = first if i == 0 else load(files[i])
        check_series(first, image)
        out += _decoded(image, [0], [i], pts)
    return out


def _decoded(image: Image, indices: list[int], clip_indices: list[int], pts: list[float]) -> list[DecodedFrame]:
    """Frames `indices` of one file as DecodedFrames numbered `clip_indices` in the clip."""
    palette = _palette(image) if image.photometric == "PALETTE COLOR" else None
    return [_frame(image, ci, pts[ci], arr, pi, palette)
            for ci, (_, arr, pi) in zip(clip_indices, _decode_frames(image, indices))]


def _decode_frames(image: Image, indices: list[int]) -> Iterator[tuple[int, np.ndarray, str]]:
    """(index, decoded array, photometric interpretation of that array) for each index, in order."""
    h = image.header
    syntax = SYNTAXES[h.syntax]
    decoder = get_decoder(UID(h.syntax))
    opts = as_pixel_options(h.ds, pixel_keyword="PixelData")
    if h.pixels.vr:
        opts["pixel_vr"] = h.pixels.vr
    # pydicom's runner turns native YBR_FULL_422 into YBR_FULL after the first frame and
    # then reads the next one with the wrong length: give each such frame its own runner.
    one_by_one = not syntax.plugin and image.photometric == "YBR_FULL_422"
    batches = [[i] for i in indices] if one_by_one else [indices]
    with h.path.open("rb") as f:
        for batch in batches:
            if h.syntax == DEFLATED:
                src, kwargs = h.ds, {}
            else:
                f.seek(h.pixels.offset)
                src, kwargs = f, opts
            frames = decoder.iter_array(src, indices=batch, raw=True, decoding_plugin=syntax.plugin, **kwargs)
            for index in batch:
                # plugins raise what their libraries raise
                with reading(h.path, lambda exc: _cannot_decode(exc, index, syntax.package)):
                    arr, props = next(frames, (None, None))
                if arr is None:
                    raise MediaError(h.path, f"frame {index} did not decode")
                yield index, arr, str(props.get("photometric_interpretation", image.photometric))


def _cannot_decode(exc: Exception, index: int, package: str) -> str:
    text = str(exc).strip()
    msg = text.splitlines()[0][:200] if text else ""
    return f"cannot decode frame {index} ({package}): {type(exc).__name__}{': ' + msg if msg else ''}"


def _frame(image: Image, index: int, pts: float, arr: np.ndarray, pi: str,
           palette: tuple[np.ndarray, np.ndarray] | None) -> DecodedFrame:
    """One decoded array -> DecodedFrame by the rules of the module doc."""
    if pi in _GREY:
        grey = _grey_to_8bit(image, arr)
        if pi == "MONOCHROME1":
            grey = 255 - grey
        return DecodedFrame(index=index, pts=pts, grey=np.ascontiguousarray(grey))
    if pi == "PALETTE COLOR" and palette is not None:
        rgb_table, grey_table = palette
        return DecodedFrame(index=index, pts=pts, grey=np.take(grey_table, arr), rgb=np.take(rgb_table, arr, axis=0))
    if pi == "RGB":
        rgb = arr if arr.dtype == np.uint8 and image.bits_stored == 8 else range_to_8bit(arr, image.bits_stored)
    elif pi in ("YBR_FULL", "YBR_FULL_422"):
        rgb = ycbcr_to_rgb(arr[..., 0], arr[..., 1], arr[..., 2], full_range=True)
    else:
        raise MediaError(image.header.path, f"the decoder returned {pi} frames, which us4 cannot convert")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return DecodedFrame(index=index, pts=pts, grey=to_grey(rgb), rgb=rgb)


def _grey_to_8bit(image: Image, arr: np.ndarray) -> np.ndarray:
    if image.bits_allocated == 8 and image.bits_stored == 8 and not image.signed:
        return np.asarray(arr, dtype=np.uint8)
    thresholds = _voi_thresholds(image)
    if thresholds is not None:
        return thresholds_to_8bit(arr, thresholds)
    return range_to_8bit(arr, image.bits_stored, image.signed)


def _fraction(value) -> Fraction | None:
    # The decimal string as written (DS), so the thresholds are exact.
    try:
        text = str(value).strip()
        return Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None


def _voi_thresholds(image: Image) -> np.ndarray | None:
    """255 stored-value thresholds of the first VOI window (module doc), or None without a usable one.

    Level k (1..255) starts where the windowed value rounds to k: for LINEAR (PS3.3
    C.11.2.1.2.1) at x = c - 1/2 + (w - 1) ((2k - 1)/510 - 1/2); for LINEAR_EXACT at
    x = c + w ((2k - 1)/510 - 1/2); x = stored * slope + intercept. Exact rationals.
    """
    ds = image.header.ds
    c = _fraction(first_value(ds.get("WindowCenter")))
    w = _fraction(first_value(ds.get("WindowWidth")))
    slope = _fraction(ds.get("RescaleSlope", 1)) or Fraction(1)
    intercept = _fraction(ds.get("RescaleIntercept", 0)) or Fraction(0)
    if c is None or w is None or slope <= 0:
        return None
    exact = str(ds.get("VOILUTFunction", "") or "").strip() == "LINEAR_EXACT"
    if (exact and w <= 0) or (not exact and w < 1):
        return None
    lo = -(1 << (image.bits_stored - 1)) if image.signed else 0
    hi = lo + (1 << image.bits_stored) - 1
    out = []
    for k in range(1, 256):
        rel = Fraction(2 * k - 1, 510) - Fraction(1, 2)
        x = c + w * rel if exact else c - Fraction(1, 2) + (w - 1) * rel
        t = (x - intercept) / slope
        stored = math.ceil(t)
        if not exact and w == 1 and stored == t:
            stored += 1  # width 1: a value exactly at c - 1/2 is still 0
        out.append(min(max(stored, lo - 1), hi + 1))
    return np.array(out, dtype=np.int64)


def _palette(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """The palette applied to every possible index (module doc): (2**BitsAllocated, 3) uint8 RGB,
    and the grey of each entry (to_grey works pixel by pixel, so a frame's grey is a lookup too)."""
    ds = image.header.ds
    index = np.arange(1 << image.bits_allocated, dtype=np.uint16 if image.bits_allocated == 16 else np.uint8)
    with reading(image.header.path, lambda exc: f"unreadable palette ({type(exc).__name__})"):  # missing or malformed
        table = apply_color_lut(index, ds)
    table = np.asarray(table)
    if table.dtype.itemsize > 1 and int(table.max()) > 255:
        table = table >> 8
    rgb = np.ascontiguousarray(table, dtype=np.uint8)
    return rgb, to_grey(rgb[None])[0]
