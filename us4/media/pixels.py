"""Pixel helpers: grey conversion, perceptual hash, duplicate test, PNG bytes, pixel hash.

Everything here is integer arithmetic or a fixed PIL operation, so the same input
gives the same output on every machine with the same library versions.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

__all__ = ["to_grey", "dhash", "near_duplicate", "encode_png", "pixel_sha256", "thumbnail", "BT601_CHROMA"]

THUMB = 64  # px a side of the thumbnails that confirm near-duplicates on pixels

#: BT.601 YCbCr -> RGB chroma weights in 16.16 fixed point, keyed by "the chroma is full
#: range": (Cr->R, Cb->G, Cr->G, Cb->B). Full range: 1.402, 0.344136, 0.714136, 1.772;
#: limited range (16..240): the same times 255/224. With luma already at full range,
#: R = Y + Kr Cr, G = Y - Kgu Cb - Kgv Cr, B = Y + Kb Cb (Cb, Cr centred on 0).
BT601_CHROMA = {
    True: (91881, 22553, 46802, 116130),
    False: (104597, 25675, 53279, 132201),
}


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W uint8 luma, ITU-R 601 weights in integers; 2-D passes through."""
    if rgb.ndim == 2:
        return rgb
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"to_grey expects H x W or H x W x 3, got shape {rgb.shape}")
    c = rgb[..., :3].astype(np.uint32)
    # (299 R + 587 G + 114 B) / 1000, rounded half up; exact integers, no float drift.
    y = (c[..., 0] * 299 + c[..., 1] * 587 + c[..., 2] * 114 + 500) // 1000
    return y.astype(np.uint8)


def dhash(grey: np.ndarray) -> int:
    """64-bit difference hash in [0, 2**64): bit set where a pixel is brighter than its right neighbour.

    The frame is reduced to 9 x 8 with PIL's BILINEAR filter (which averages over the
    whole source area when shrinking); bits run row by row, most significant first.
    """
    grey = to_grey(np.asarray(grey))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey)).resize((9, 8), Image.Resampling.BILINEAR),
                       dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def _shrink(grey: np.ndarray, target: int = 128) -> np.ndarray:
    # Strided subsampling: cheap, and a frozen frame stays identical under it.
    step = max(1, max(grey.shape) // target)
    return grey[::step, ::step]


def near_duplicate(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """True when the mean absolute grey difference of `a` and `b` is below `threshold` levels."""
    ga, gb = to_grey(np.asarray(a)), to_grey(np.asarray(b))
    if ga.shape != gb.shape:
        return False
    da, db = _shrink(ga).astype(np.int16), _shrink(gb).astype(np.int16)
    return float(np.abs(da - db).mean()) < threshold


def encode_png(arr: np.ndarray, compress_level: int) -> bytes:
    """PNG bytes of a uint8 image (mode L for 2-D, RGB for 3-D), no metadata chunks."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {arr.dtype}")
    if arr.ndim == 2:
        img = Image.fromarray(arr)
    elif arr.ndim == 3 and arr.shape[2] == 3:
        img = Image.fromarray(arr)
    else:
        raise ValueError(f"encode_png expects H x W or H x W x 3, got shape {arr.shape}")
    buf = io.BytesIO()
    # optimize=False: optimize tries several filters and is slow without changing pixels.
    img.save(buf, format="PNG", compress_level=int(compress_level), optimize=False)
    return buf.getvalue()


def pixel_sha256(arr: np.ndarray) -> str:
    """sha256 of b"HxW[xC]\\n" followed by the row-major uint8 pixel bytes.

    The shape is hashed too, so a 4x6 and a 6x4 image of the same bytes differ.
    """
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"pixel_sha256 expects uint8, got {arr.dtype}")
    h = hashlib.sha256("x".join(str(d) for d in arr.shape).encode("ascii") + b"\n")
    h.update(arr.tobytes())
    return h.hexdigest()


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """THUMB x THUMB uint8 grey thumbnail (PIL BILINEAR) of a stored image, grey or RGB.

    The build keeps one per frame to confirm near-duplicate pairs; `us4 audit` makes the
    same from the decoded PNG, so both compare the same numbers.
    """
    grey = np.ascontiguousarray(to_grey(np.asarray(pixels)))
    return np.asarray(Image.fromarray(grey).resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.uint8)
