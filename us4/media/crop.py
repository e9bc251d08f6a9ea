"""Find the scan region (sector or rectangle) of an ultrasound clip.

The scan region is where speckle moves from frame to frame and where the picture is
brighter than the black background. Burned-in text, scale bars and logos are static
and made of thin strokes: a box-filter majority vote removes them, and the box is
then read off row and column profiles of what is left. numpy only.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from .types import Box, Region

__all__ = ["detect_scan_region", "is_colour", "largest_tissue_region", "tissue_regions"]


def tissue_regions(regions: Sequence[Region]) -> list[Region]:
    """The 2D regions (spatial format 1), left to right then top to bottom: the views of a
    dual (or multi) view, in the order a reader names them."""
    return sorted((r for r in regions if r.spatial_format == 1), key=lambda r: (r.box.x, r.box.y))


def largest_tissue_region(regions: Sequence[Region]) -> Region | None:
    """The largest 2D region (spatial format 1) by box area, the first of equals; None if there is none.

    This is the exact crop for a DICOM file that declares its scanner geometry.
    """
    best = None
    for r in regions:
        if r.spatial_format == 1 and (best is None or r.box.area > best.box.area):
            best = r
    return best


# Tuning, as fractions of the frame unless stated. Chosen on the 62 convex POCUS
# clips (as they are, and with synthetic borders and burned-in UI added) and on
# the phantom clips.
_WINDOW = 0.035       # majority-vote window side (text strokes and small blobs vanish)
_MIN_WINDOW = 5       # ... in pixels, at least
_ON_FRACTION = 0.03   # a row/column is "on" when this fraction of it survives cleaning
_GAP = 0.01           # runs separated by at most this gap belong together
_MIN_MASS = 0.08      # farther runs count only when they hold this share of the mass
_MIN_SIDE = 0.2       # a credible box spans at least this much of each side
_MIN_ACTIVE = 0.04    # below this active area the clip counts as static
_STD_NUM, _STD_DEN = 5, 2  # 2.5 grey levels: temporal std of static pixels after compression
_LIFT = 4.0           # grey levels above the border that count as picture
_UI_LEVEL = 40.0      # static pixels this much above the border may be burned-in UI
_STEP = 2             # statistics on every _STEP-th pixel and row ...
_STEP_MIN_SIDE = 256  # ... of frames at least this many pixels a side


def _moments(frames: list, step: int) -> tuple[int, np.ndarray, np.ndarray, tuple[int, int]]:
    """Frame count, per-pixel sums of grey and grey squared on the `step`-decimated grid
    (exact integers), and the full frame size.

    Integers rather than float means and stds: the thresholds below then flip on
    the same pixels on every machine, so the box is reproducible bit for bit.
    """
    from .pixels import to_grey

    s1 = s2 = None
    shape = None
    n = 0
    # 255^2 * n fits int32 up to 33,000 frames: half the memory traffic of int64.
    acc = np.int32 if len(frames) < 33_000 else np.int64
    for f in frames:
        a = np.asarray(f)
        if shape is None:
            shape = a.shape[:2]
        elif a.shape[:2] != shape:
            raise ValueError("all frames must have the same size")
        g = to_grey(a[::step, ::step] if step > 1 else a).astype(acc)
        if s1 is None:
            s1 = g.copy()
            s2 = g * g
        else:
            s1 += g
            s2 += g * g
        n += 1
    if n == 0:
        raise ValueError("detect_scan_region needs at least one frame")
    return n, s1.astype(np.int64), s2.astype(np.int64), shape


def _window_sums(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of `mask` over a k x k window (clipped at the borders) and the window sizes.

    Separable running sums; the clipped ends come from padding the cumulative sums
    with their first and last rows, so everything is slicing (no gathers).
    """
    h, w = mask.shape
    r = k // 2
    c = np.empty((h + 1 + 2 * r, w), np.int32)
    c[: r + 1] = 0
    np.cumsum(mask, axis=0, dtype=np.int32, out=c[r + 1: r + 1 + h])
    c[r + 1 + h:] = c[r + h]
    rows = c[2 * r + 1: 2 * r + 1 + h] - c[:h]
    d = np.empty((h, w + 1 + 2 * r), np.int32)
    d[:, : r + 1] = 0
    np.cumsum(rows, axis=1, dtype=np.int32, out=d[:, r + 1: r + 1 + w])
    d[:, r + 1 + w:] = d[:, r + w: r + w + 1]
    total = d[:, 2 * r + 1: 2 * r + 1 + w] - d[:, :w]
    ny = np.minimum(np.arange(h) + r + 1, h) - np.maximum(np.arange(h) - r, 0)
    nx = np.minimum(np.arange(w) + r + 1, w) - np.maximum(np.arange(w) - r, 0)
    return total, ny[:, None] * nx[None, :]


def _box_mean_above(mask: np.ndarray, k: int, num: int, den: int) -> np.ndarray:
    """Where the mean of `mask` over a k x k window exceeds num/den, decided in integers."""
    total, count = _window_sums(mask, k)
    return total * den > count * num


def _majority(mask: np.ndarray, k: int) -> np.ndarray:
    return _box_mean_above(mask, k, 1, 2)


def _span(profile: np.ndarray, length: int) -> tuple[int, int] | None:
    """[start, stop) covering the main run of `profile` (counts per row or column).

    Runs of "on" entries closer than the gap are joined; the run holding the most
    mass is the core, and other runs join it only when they carry a real share of
    the mass (a dark band inside a sector splits it; a leftover logo does not count).
    """
    on = profile >= max(1.0, _ON_FRACTION * length)
    if not on.any():
        return None
    idx = np.flatnonzero(on)
    gap = max(2, int(round(_GAP * len(profile))))
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    stops = np.concatenate((idx[breaks], [idx[-1]])) + 1
    mass = np.array([profile[a:b].sum() for a, b in zip(starts, stops)], dtype=np.float64)
    keep = mass >= _MIN_MASS * mass.sum()
    keep[int(np.argmax(mass))] = True
    return int(starts[keep].min()), int(stops[keep].max())


def _box_from_mask(mask: np.ndarray) -> Box | None:
    h, w = mask.shape
    rows = _span(mask.sum(axis=1), w)
    if rows is None:
        return None
    cols = _span(mask[rows[0]:rows[1]].sum(axis=0), rows[1] - rows[0])
    if cols is None:
        return None
    # Second pass: rows of the chosen columns only, so side text cannot stretch the height.
    rows = _span(mask[:, cols[0]:cols[1]].sum(axis=1), cols[1] - cols[0])
    if rows is None:
        return None
    return Box(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


def _background(mean: np.ndarray) -> tuple[float, float]:
    """Level and spread of the border: the darkest of the four corner patches."""
    h, w = mean.shape
    ph, pw = max(2, h // 20), max(2, w // 20)
    corners = [mean[:ph, :pw], mean[:ph, -pw:], mean[-ph:, :pw], mean[-ph:, -pw:]]
    darkest = min(corners, key=lambda c: float(np.median(c)))
    level = float(np.median(darkest))
    # Median absolute deviation: a label or tick reaching into the corner must not
    # raise the noise estimate (a plain std did, and lost a dim fan floor).
    return level, 1.4826 * float(np.median(np.abs(darkest - level)))


def detect_scan_region(frames: Sequence[np.ndarray]) -> Box:
    """The bounding box of the ultrasound scan region, without borders and burned-in UI.

    `frames` are H x W or H x W x 3 uint8 frames of one clip (a few dozen spread over
    the clip work best). With moving content the box comes from temporal variation
    (speckle moves, text does not) joined with non-black intensity; a static clip
    (one frame, or frozen) falls back to intensity alone. Deterministic; returns the
    full frame when nothing credible is found.

    Frames of 256 pixels a side or more are read on a 2x-decimated grid (every other
    pixel of every other row: per-pixel statistics unchanged, a quarter of the work),
    and the box is mapped back to full resolution (edges within 2 pixels; on the 62
    convex POCUS clips IoU >= 0.985 with the full-resolution box).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("detect_scan_region needs at least one frame")
    h, w = np.asarray(frames[0]).shape[:2]
    step = _STEP if min(h, w) >= _STEP_MIN_SIDE else 1
    n, s1, s2, (h, w) = _moments(frames, step)
    full = Box(0, 0, w, h)
    if h < 8 or w < 8:
        return full
    mean = s1 / n  # an exact quotient of integers: the same everywhere
    # The window is a fraction of the full frame, in grid pixels (odd).
    k = max(3, int(round(max(_MIN_WINDOW, _WINDOW * min(h, w)) / step))) | 1

    # Not black: the deep, signal-poor part of a fan still sits a few grey levels above
    # the border, which is what keeps it inside the box. Thin text and bars that pass
    # this test are voted away below; distant solid blobs are dropped by `_span`.
    bg, spread = _background(mean)
    mask = mean > bg + _LIFT + 3.0 * spread
    if n >= 3:
        # std > 2.5  <=>  n*s2 - s1^2 > (2.5 n)^2, kept in integers.
        moving = (n * s2 - s1 * s1) * _STD_DEN ** 2 > (_STD_NUM * n) ** 2
        active = _majority(moving, k)
        if active.mean() >= _MIN_ACTIVE:
            # Bright pixels that never change and have no moving picture nearby are
            # burned-in UI (labels, logos, bars): drop them before the vote, so even
            # bold text cannot survive it. A still near-field stays: speckle is close.
            near = _box_mean_above(active, 3 * k, 1, 50)  # mean > 0.02
            ui = ~moving & (mean > bg + _UI_LEVEL) & ~near
            mask = (mask & ~ui) | moving
    mask = _majority(mask, k)

    box = _box_from_mask(mask)
    if box is not None and step > 1:
        # Grid cell i covers full pixels [step*i, step*i + step): map the edges back.
        x0, y0 = box.x * step, box.y * step
        x1, y1 = min(w, (box.x + box.w) * step), min(h, (box.y + box.h) * step)
        box = Box(x0, y0, x1 - x0, y1 - y0)
    if box is None or box.w < _MIN_SIDE * w or box.h < _MIN_SIDE * h:
        return full
    return box


_COLOUR_LEVEL = 48      # a pixel is coloured when two of its channels differ by more than this
_COLOUR_SHARE = 0.002   # ... and the clip when this share of the region's pixels is coloured
_COLOUR_FRAMES = 8      # frames looked at, evenly spread over the clip


@lru_cache(maxsize=2)
def _coloured_uv(full_range: bool) -> np.ndarray:
    """65536-entry table over (U << 8 | V): is the largest RGB channel difference above the level?

    With luma at full range, R - G, G - B and R - B depend on chroma alone (BT.601,
    16.16 fixed point as in `DecodedFrame.to_rgb`); clipping at black and white is ignored.
    """
    from .pixels import BT601_CHROMA

    kr, kgu, kgv, kb = BT601_CHROMA[bool(full_range)]
    cb = np.arange(256, dtype=np.int64)[:, None] - 128
    cr = np.arange(256, dtype=np.int64)[None, :] - 128
    rg = np.abs(kgu * cb + (kr + kgv) * cr)
    gb = np.abs((kgu + kb) * cb + kgv * cr)
    rb = np.abs(kr * cr - kb * cb)
    spread = np.maximum(np.maximum(rg, gb), rb)
    return (spread > _COLOUR_LEVEL << 16).ravel()


def _spread_frames(frames: Sequence) -> list:
    n = len(frames)
    if n <= _COLOUR_FRAMES:
        return list(frames)
    m = _COLOUR_FRAMES
    return [frames[i * (n - 1) // (m - 1)] for i in range(m)]


def _coloured_rgb(a: np.ndarray) -> int:
    c = a[..., :3].astype(np.int16)
    spread = np.maximum(np.maximum(np.abs(c[..., 0] - c[..., 1]), np.abs(c[..., 1] - c[..., 2])),
                        np.abs(c[..., 0] - c[..., 2]))
    return int(np.count_nonzero(spread > _COLOUR_LEVEL))


def is_colour(frames: Sequence, box: Box | None = None) -> bool:
    """True when the clip carries colour (e.g. Doppler) inside `box`.

    `frames` are `DecodedFrame`s (or H x W x 3 / H x W arrays); up to 8 of them,
    evenly spread, are looked at. A pixel is coloured when its largest channel
    difference is well above what chroma subsampling and compression leave on a
    grey picture (on the grey POCUS clips under 0.03 % of pixels pass 30 levels,
    tinted ones included); the clip is colour when more than 0.2 % of the region's
    pixels pass 48. Frames that kept their chroma planes are judged on those (the
    box scaled to the chroma grid, one chroma sample counting as one pixel),
    others on RGB; 2-D frames carry no colour.
    """
    coloured = 0
    total = 0
    for f in _spread_frames(list(frames)):
        u = getattr(f, "u", None)
        if u is not None:
            v = f.v
            if box is not None:
                fx, fy = f.chroma_factors()
                x0, y0 = box.x // fx, box.y // fy
                x1, y1 = -(-(box.x + box.w) // fx), -(-(box.y + box.h) // fy)
                u, v = u[y0:y1, x0:x1], v[y0:y1, x0:x1]
            key = (u.astype(np.uint16) << 8) | v
            coloured += int(np.count_nonzero(_coloured_uv(bool(f.full_range))[key]))
            total += key.size
            continue
        a = getattr(f, "rgb", None) if not isinstance(f, np.ndarray) else f
        if a is None:
            continue
        a = np.asarray(a)
        if a.ndim != 3 or a.shape[2] < 3:
            continue
        if box is not None:
            a = box.apply(a)
        coloured += _coloured_rgb(a)
        total += a.shape[0] * a.shape[1]
    return total > 0 and coloured >= _COLOUR_SHARE * total
