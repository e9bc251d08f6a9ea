"""Which frames of a clip to keep."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

__all__ = ["SamplingPolicy"]

_MODES = ("every_n", "rate_hz", "evenly")
#: The largest count a policy may name (every_n, evenly, max_frames): no clip has a million
#: frames (an hour at 240 fps is 864,000), so a larger count is a slip, never a need.
MAX_COUNT = 1_000_000
#: rate_hz bounds: one frame every 1,000 s at least, and no faster than a frame rate can be.
MIN_RATE_HZ, MAX_RATE_HZ = 0.001, 10_000.0


@dataclass(frozen=True)
class SamplingPolicy:
    """Exactly one of `every_n`, `rate_hz`, `evenly`; `max_frames` optionally caps the result.

    - ``every_n=N``: frames 0, N, 2N, ...
    - ``rate_hz=R``: the POCOVID rule, every ``max(1, int(fps / R))``-th frame.
    - ``evenly=K``: K frames evenly spread over the clip (fewer on short clips).

    Counts are whole numbers from 1 to `MAX_COUNT`, rates lie in [MIN_RATE_HZ, MAX_RATE_HZ];
    `indices` allocates in proportion to the frames the clip has, whatever the policy says.

    >>> SamplingPolicy(rate_hz=3, max_frames=30).indices(100, 30.0)[:4]
    [0, 10, 20, 30]
    """

    every_n: int | None = None
    rate_hz: float | None = None
    evenly: int | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        chosen = [m for m in _MODES if getattr(self, m) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "SamplingPolicy needs exactly one of every_n, rate_hz, evenly; "
                f"got {', '.join(chosen) if chosen else 'none'}")
        for name in ("every_n", "evenly", "max_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or not 1 <= value <= MAX_COUNT):
                raise ValueError(f"SamplingPolicy.{name} must be a whole number from 1 to {MAX_COUNT:,}, "
                                 f"got {value!r:.40}")
        if self.rate_hz is not None:
            if isinstance(self.rate_hz, bool) or not isinstance(self.rate_hz, (int, float)) \
                    or not MIN_RATE_HZ <= self.rate_hz <= MAX_RATE_HZ:
                raise ValueError(f"SamplingPolicy.rate_hz must be a number of frames per second from {MIN_RATE_HZ} "
                                 f"to {MAX_RATE_HZ:,.0f}, got {self.rate_hz!r:.40}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplingPolicy":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown sampling key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Set fields only, keys sorted (stable input for recipe hashes)."""
        return {k: getattr(self, k) for k in sorted(f.name for f in fields(self))
                if getattr(self, k) is not None}

    def indices(self, n_frames: int, fps: float) -> list[int]:
        """Sorted frame indices to keep from a clip of `n_frames` frames at `fps`."""
        if n_frames <= 0:
            return []
        if n_frames == 1:  # a still image (a single-frame DICOM file) has no rate, and one frame to keep
            return [0]
        if self.every_n is not None:
            out = range(0, n_frames, int(self.every_n))
        elif self.rate_hz is not None:
            if not (fps > 0 and math.isfinite(fps)):
                raise ValueError(f"rate_hz sampling needs a positive fps, got {fps!r}")
            out = range(0, n_frames, max(1, min(n_frames, int(fps / self.rate_hz))))
        elif self.evenly >= n_frames:  # as many spots as frames or more: every frame, without K spots
            out = range(n_frames)
        else:
            out = sorted({int(i) for i in np.round(np.linspace(0, n_frames - 1, int(self.evenly)))})
        if self.max_frames is not None:
            out = out[: int(self.max_frames)]
        return list(out)
