"""Pixel helpers: grey conversion, perceptual hash, duplicate test, PNG bytes, pixel hash.

Everything here is integer arithmetic or a fixed PIL operation, so the same input
gives the same output on every machine with the same library versions.
"""
from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["to_grey", "dhash", "near_duplicate", "encode_png", "PNG_ENCODER", "pixel_sha256", "thumbnail", "BT601_CHROMA",
           "ycbcr_to_rgb", "range_to_8bit", "thresholds_to_8bit"]

THUMB = 64  # px a side of the thumbnails that confirm near-duplicates on pixels

#: BT.601 YCbCr -> RGB chroma weights in 16.16 fixed point, keyed by "the chroma is full
#: range": (Cr->R, Cb->G, Cr->G, Cb->B). Full range: 1.402, 0.344136, 0.714136, 1.772;
#: limited range (16..240): the same times 255/224. With luma already at full range,
#: R = Y + Kr Cr, G = Y - Kgu Cb - Kgv Cr, B = Y + Kb Cb (Cb, Cr centred on 0).
BT601_CHROMA = {
    True: (91881, 22553, 46802, 116130),
    False: (104597, 25675, 53279, 132201),
}


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, full_range: bool) -> np.ndarray:
    """H x W x 3 uint8 RGB from full-range luma and same-size chroma planes, BT.601 in integers.

    `full_range` tells the chroma's range (see BT601_CHROMA); luma must already be
    full range. Exact 16.16 fixed point, so the same bytes on every machine.
    """
    cb = cb.astype(np.int32) - 128
    cr = cr.astype(np.int32) - 128
    kr, kgu, kgv, kb = BT601_CHROMA[bool(full_range)]
    luma = (y.astype(np.int32) << 16) + 32768
    out = np.empty(y.shape + (3,), np.uint8)
    out[..., 0] = np.clip((luma + kr * cr) >> 16, 0, 255)
    out[..., 1] = np.clip((luma - kgu * cb - kgv * cr) >> 16, 0, 255)
    out[..., 2] = np.clip((luma + kb * cb) >> 16, 0, 255)
    return out


def range_to_8bit(arr: np.ndarray, bits: int, signed: bool = False) -> np.ndarray:
    """Samples of `bits` significant bits -> uint8 over their whole range: round(v * 255 / (2**bits - 1)).

    The lowest representable value (0, or -2**(bits-1) when `signed`) maps to 0 and
    the highest to 255, rounded half up in integers. 8-bit unsigned input is unchanged.
    This is the rule for deep DICOM frames without a VOI window and for 16-bit images.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be 1..32, got {bits}")
    top = (1 << bits) - 1
    v = np.asarray(arr).astype(np.int64)
    if signed:
        v = v + (1 << (bits - 1))
    v = np.clip(v, 0, top)
    return ((v * 510 + top) // (2 * top)).astype(np.uint8)


def thresholds_to_8bit(arr: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """uint8 levels of `arr` given 255 ascending integer thresholds: the level of v is
    how many thresholds are <= v (so v >= thresholds[k-1] means level >= k).

    A monotone mapping (a VOI window, say) written this way is exact: the thresholds
    come from rational arithmetic once, and no pixel goes through floating point.
    """
    t = np.asarray(thresholds, dtype=np.int64)
    if t.shape != (255,):
        raise ValueError(f"expected 255 thresholds, got shape {t.shape}")
    return np.searchsorted(t, np.asarray(arr).astype(np.int64), side="right").astype(np.uint8)


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
    bits = np.packbits(small[:, :-1] > small[:, 1:])  # row by row, most significant bit first
    return int.from_bytes(bits.tobytes(), "big")


def _shrink(grey: np.ndarray, target: int = 128) -> np.ndarray:
    # Strided subsampling: cheap, and a frozen frame stays identical under it.
    step = max(1, max(grey.shape) // target)
    return grey[::step, ::step]


def near_duplicate(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """True when the mean absolute grey difference of `a` and `b` is below `threshold` levels."""
    ga, gb = to_grey(np.asarray(a)), to_grey(np.asarray(b))
    if ga.shape != gb.shape or not ga.size:
        return False
    diff = np.subtract(_shrink(ga), _shrink(gb), dtype=np.int16)
    # summed as integers: `mean` went through float64 for the same exact value, at twice the time
    return int(np.abs(diff, out=diff).sum(dtype=np.int64)) / diff.size < threshold


#: How `encode_png` writes a PNG; recorded in every lock (environment `png`) with zlib's version,
#: since the bytes depend on both while the pixels never do.
PNG_ENCODER = "us4-png/1 (filter Sub, zlib strategy RLE at level 1)"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(arr: np.ndarray, compress_level: int) -> bytes:
    """PNG bytes of a uint8 image (grey for 2-D, RGB for 3-D), no metadata chunks; see PNG_ENCODER.

    Written here rather than by Pillow or OpenCV because it is faster than both at level 1
    (benchmarks/png.py, BLUES frames, 350 x 350 grey): 0.99 ms and 41.6 KiB a frame, against
    Pillow's 2.56 ms and 47.6 KiB, OpenCV's 2.07 ms and 47.0 KiB, and 1.64 ms and 37.9 KiB with
    OpenCV's RLE strategy. The Sub filter is one numpy subtraction; Pillow's adaptive filter
    tries five per row. RLE (runs of one byte, the dark background of a scan) is zlib's fastest
    search; levels above 1 use its default search at that level (on scan frames rarely smaller).
    """
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {arr.dtype}")
    if arr.ndim == 2:
        colour_type, channels = 0, 1
    elif arr.ndim == 3 and arr.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"encode_png expects H x W or H x W x 3, got shape {arr.shape}")
    height, width = arr.shape[:2]
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ValueError(f"encode_png: no PNG has a {width}x{height} image")
    flat = arr.reshape(height, width * channels)
    rows = np.empty((height, flat.shape[1] + 1), np.uint8)
    rows[:, 0] = 1  # filter type Sub: each byte minus the byte one pixel to its left, modulo 256
    rows[:, 1:1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels:])
    level = int(compress_level)
    packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY)
    idat = packer.compress(rows) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


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
