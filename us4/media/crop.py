"""Find the scan region (sector or rectangle) of an ultrasound clip.

The scan region is where speckle moves from frame to frame and where the picture is
brighter than the black background. Burned-in text, scale bars and logos are static
and made of thin strokes: a box-filter majority vote removes them, and the box is
then read off row and column profiles of what is left. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Box", "detect_scan_region", "is_colour"]


@dataclass(frozen=True)
class Box:
    """A pixel rectangle: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [int(self.x), int(self.y), int(self.w), int(self.h)]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Box":
        x, y, w, h = (int(v) for v in values)
        return cls(x, y, w, h)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """The box's pixels of an H x W (x C) array, as a view."""
        return arr[self.y: self.y + self.h, self.x: self.x + self.w]

    @property
    def area(self) -> int:
        return int(self.w) * int(self.h)


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


def _moments(frames: Sequence[np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """Frame count and per-pixel sums of grey and grey squared, in exact integers.

    Integers rather than float means and stds: the thresholds below then flip on
    the same pixels on every machine, so the box is reproducible bit for bit.
    """
    from .pixels import to_grey

    s1 = s2 = None
    shape = None
    n = 0
    for f in frames:
        g = to_grey(np.asarray(f))
        if shape is None:
            shape = g.shape
            s1 = np.zeros(shape, np.int64)
            s2 = np.zeros(shape, np.int64)
        elif g.shape != shape:
            raise ValueError("all frames must have the same size")
        g = g.astype(np.int64)
        s1 += g
        s2 += g * g
        n += 1
    if n == 0:
        raise ValueError("detect_scan_region needs at least one frame")
    return n, s1, s2


def _box_mean(mask: np.ndarray, k: int) -> np.ndarray:
    """Mean of `mask` over a k x k window (clipped at the borders), via summed-area tables."""
    h, w = mask.shape
    r = k // 2
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    total = (sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0])
    count = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return total / count


def _majority(mask: np.ndarray, k: int) -> np.ndarray:
    return _box_mean(mask.astype(np.uint8), k) > 0.5


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
    """
    n, s1, s2 = _moments(frames)
    h, w = s1.shape
    full = Box(0, 0, w, h)
    if h < 8 or w < 8:
        return full
    mean = s1 / n  # an exact quotient of integers: the same everywhere
    k = max(_MIN_WINDOW, int(round(_WINDOW * min(h, w)))) | 1

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
            near = _box_mean(active.astype(np.uint8), 3 * k) > 0.02
            ui = ~moving & (mean > bg + _UI_LEVEL) & ~near
            mask = (mask & ~ui) | moving
    mask = _majority(mask, k)

    box = _box_from_mask(mask)
    if box is None or box.w < _MIN_SIDE * w or box.h < _MIN_SIDE * h:
        return full
    return box


def is_colour(frames: Sequence[np.ndarray], box: Box | None = None) -> bool:
    """True when the clip carries colour (e.g. Doppler) inside `box`.

    A pixel is coloured when its largest channel difference is well above what
    chroma subsampling and compression leave on a grey picture (on the grey POCUS
    clips under 0.03 % of pixels pass 30 levels, tinted ones included); the clip is
    colour when more than 0.2 % of the region's pixels pass 48.
    """
    coloured = 0
    total = 0
    for f in frames:
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[2] < 3:
            continue
        if box is not None:
            a = box.apply(a)
        c = a[..., :3].astype(np.int16)
        spread = np.maximum(np.maximum(np.abs(c[..., 0] - c[..., 1]), np.abs(c[..., 1] - c[..., 2])),
                            np.abs(c[..., 0] - c[..., 2]))
        coloured += int(np.count_nonzero(spread > 48))
        total += spread.size
    return total > 0 and coloured >= 0.002 * total
