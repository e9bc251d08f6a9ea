"""Counts and spreads of a release, read from its tables (not from the lock)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..contract.card import source_definition
from .read import Release

_FRAME_COLUMNS = ["source", "split", "label", "video_id", "width", "height"]
_VIDEO_COLUMNS = ["source", "fps", "n_kept", "n_frames", "duration", "orig_width", "orig_height"]


@dataclass(frozen=True)
class Stats:
    counts: pd.DataFrame  # source x split x label -> videos, frames
    sources: pd.DataFrame  # source -> videos, frames, and the paper's counts from the registry
    spread: pd.DataFrame  # quantity -> min, median, max


def release_stats(release: Release) -> Stats:
    frames = release.frames(_FRAME_COLUMNS).to_pandas()
    videos = release.videos(_VIDEO_COLUMNS).to_pandas()
    counts = (frames.groupby(["source", "split", "label"])
              .agg(videos=("video_id", "nunique"), frames=("video_id", "size"))
              .reset_index())
    # every source of the recipe, with 0 where none of its clips made it into the release
    sources = sorted(release.lock.recipe.sources)
    per_source = (counts.groupby("source")[["videos", "frames"]].sum()
                  .reindex(sources, fill_value=0).rename_axis("source").reset_index())
    definitions = [source_definition(release.lock, n) for n in sources]
    per_source["paper videos"] = [d.expected_videos for d in definitions]
    per_source["paper images"] = [d.expected_images for d in definitions]
    quantities = {
        "stored width (px)": frames["width"],
        "stored height (px)": frames["height"],
        "original width (px)": videos["orig_width"],
        "original height (px)": videos["orig_height"],
        "frame rate (fps)": videos["fps"],
        "clip duration (s)": videos["duration"],
        "frames in clip": videos["n_frames"],
        "frames kept per clip": videos["n_kept"],
    }
    spread = pd.DataFrame(
        [(name, s.min(), s.median(), s.max()) for name, s in quantities.items()],
        columns=["quantity", "min", "median", "max"],
    )
    return Stats(counts, per_source.astype(object).where(per_source.notna(), "-"), spread)
