"""How evenly a release's splits hold each class: the measure the build's split rule keeps,
and that `us4 audit` and the card report.

A class is a source's label. Its target in a split is the split's share of the class's
videos (a fifth in each of 5 folds; the validation fraction of a holdout). Clips the split
rule keeps together (a unit: a group, or a clip alone) go to one split whole, so a split can
miss its target by up to a unit's size. The bound: dealt largest first, each to the split
where its class lies furthest below target, no class ends with a spread (over the splits,
the largest minus the smallest of videos minus target; for folds simply the most minus the
fewest videos per fold) wider than its largest unit. A wider spread is imbalance that the
units do not force.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from ..recipe import Splits
from ..words import plural


@dataclass(frozen=True)
class ClassBalance:
    """One class over the splits of a release (or of an assignment being made)."""

    cls: str  # SOURCE/LABEL
    videos: dict[str, int]  # per split that has a share, in the recipe's order
    weights: dict[str, int]
    largest: int  # the most videos of this class in one unit
    units: int  # units holding a video of this class

    @property
    def total(self) -> int:
        return sum(self.videos.values())

    def target(self, split: str) -> Fraction:
        return Fraction(self.total * self.weights[split], sum(self.weights.values()))

    @property
    def empty(self) -> list[str]:
        """Splits that hold no video of the class."""
        return [s for s, n in self.videos.items() if n == 0]

    @property
    def spread(self) -> Fraction:
        """Largest minus smallest (videos - target) over the splits, in videos."""
        off = [n - self.target(s) for s, n in self.videos.items()]
        return max(off) - min(off)

    @property
    def too_wide(self) -> bool:
        return self.spread > self.largest

    def counts_text(self) -> str:
        """`4/6/1/3/0 videos in fold0-fold4, 2.8 each is its share`, or each split with its share."""
        splits = list(self.videos)
        counts = "/".join(str(self.videos[s]) for s in splits)
        names = f"{splits[0]}-{splits[-1]}" if len(splits) > 2 else "/".join(splits)
        targets = {self.target(s) for s in splits}
        shares = (f"{_videos(targets.pop())} each is its share" if len(targets) == 1
                  else "its shares " + "/".join(_videos(self.target(s)) for s in splits))
        return f"{counts} videos in {names}, {shares}"

    def spread_text(self) -> str:
        """Why a spread is too wide, the bound explained."""
        shares = "" if len(set(self.weights.values())) == 1 else ", each counted against its share"
        return (f"{self.cls} is spread {_videos(self.spread)} videos apart ({self.counts_text()}), more than its "
                f"largest group forces ({self.largest}): a group goes to one split whole, so dealing whole groups "
                f"leaves one split at most {self.largest} ahead of another{shares}")

    def empty_text(self, split: str) -> str:
        forced = (f"; it has {plural(self.units, 'unit')} (a group, or a clip alone) for "
                  f"{len(self.videos)} splits, so some split must lack it" if self.units < len(self.videos) else "")
        return f"{split} holds no {self.cls} video ({self.counts_text()}){forced}"


def class_balance(units: Iterable[tuple[str, Counter]], splits: Splits) -> dict[str, ClassBalance]:
    """{class: its balance} over `units`: (split, videos per class) of each unit. Units in a
    split without a share are left out (an inherited split of another kind)."""
    weights = splits.weights()
    videos: dict[str, Counter] = {}
    largest: Counter = Counter()
    count: Counter = Counter()
    for split, classes in units:
        if split not in weights:
            continue
        for cls, n in classes.items():
            videos.setdefault(cls, Counter())[split] += n
            largest[cls] = max(largest[cls], n)
            count[cls] += 1
    return {cls: ClassBalance(cls, {s: videos[cls][s] for s in weights}, weights, largest[cls], count[cls])
            for cls in sorted(videos)}


def _videos(x: Fraction) -> str:
    return str(int(x)) if x.denominator == 1 else f"{float(x):.1f}"
