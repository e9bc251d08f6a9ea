"""Progress lines of a run's stages, each with the time the stage still needs."""
from __future__ import annotations

import time
from collections.abc import Callable


def clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class StageProgress:
    """A progress callback for a stage of `units` equal steps (epochs): each call is one unit
    done, and its line gets the stage's ETA (mean time per unit so far x units left)."""

    def __init__(self, say: Callable[[str], None], units: int):
        self.say, self.units, self.done = say, units, 0
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * max(self.units - self.done, 0)
        self.say(f"{message}; ETA {clock(left)}" if self.done < self.units else
                 f"{message}; stage done in {clock(elapsed)}")
