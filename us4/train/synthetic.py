"""Small synthetic releases, as the pyarrow tables a release holds, for tests and loader benchmarks.

Three classes that differ in brightness and in stripe direction, so that even a
randomly initialised trunk separates them; the frames of a video are shifted,
noisy copies of one pattern, like frames of a clip.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image

from ..contract.schema import FRAME_FIELDS, TRAIN, VALIDATION, VIDEO_FIELDS, fold_name

CLASSES = ("covid", "pneumonia", "regular")


def _pattern(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = rng.uniform(0.08, 0.14)
    if cls == 0:
        base = 0.25 + 0.2 * np.sin(2 * np.pi * yy / period)
    elif cls == 1:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        base = 0.45 + 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
    else:
        base = 0.7 + 0.2 * np.sin(2 * np.pi * xx / period)
    return base


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def synthetic_tables(n_videos: int = 15, frames_per_video: int | list[int] = 6, size: int = 48,
                     seed: int = 0, layout: str = "pocus", n_folds: int = 5) -> tuple[pa.Table, pa.Table]:
    """(frames, videos) tables in the release layout (`docs/architecture.md`).

    layout "pocus": splits fold0..fold{n-1} with a `fold` column, classes assigned round-robin;
    layout "us4": splits train/validation (every fifth video), `us4_label` set, no folds.
    """
    rng = np.random.default_rng(seed)
    counts = [frames_per_video] * n_videos if isinstance(frames_per_video, int) else list(frames_per_video)
    frames: dict[str, list] = {k: [] for k in ("image", "frame_id", "source", "video_id", "frame_index", "label",
                                               "label_id", "us4_label", "split", "fold", "width", "height")}
    videos: dict[str, list] = {k: [] for k in ("video_id", "source", "label", "label_id", "us4_label", "split", "fold",
                                               "clip_sha256", "n_kept", "frame_ids", "frame_indices")}
    fid = 0
    per_class_seen = [0, 0, 0]
    for v in range(len(counts)):
        cls = v % 3
        fold = per_class_seen[cls] % n_folds if layout == "pocus" else None
        per_class_seen[cls] += 1
        split = fold_name(fold) if layout == "pocus" else (VALIDATION if v % 5 == 4 else TRAIN)
        us4 = (None if layout == "pocus" else (10 if cls == 2 else 11))
        source = "pocus" if layout == "pocus" else "butterfly"
        vid = f"{source}/synthetic/{CLASSES[cls]}_{v:03d}.mp4"
        base = _pattern(cls, size, rng)
        ids = []
        for k in range(counts[v]):
            shifted = np.roll(base, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
            img = np.clip(shifted + rng.normal(0, 0.05, shifted.shape), 0, 1)
            frames["image"].append({"bytes": _png((img * 255).astype(np.uint8)), "path": None})
            for col, val in (("frame_id", fid), ("source", source), ("video_id", vid), ("frame_index", k),
                             ("label", CLASSES[cls]), ("label_id", cls), ("us4_label", us4), ("split", split),
                             ("fold", fold), ("width", size), ("height", size)):
                frames[col].append(val)
            ids.append(fid)
            fid += 1
        for col, val in (("video_id", vid), ("source", source), ("label", CLASSES[cls]), ("label_id", cls),
                         ("us4_label", us4), ("split", split), ("fold", fold),
                         ("clip_sha256", hashlib.sha256(vid.encode()).hexdigest()), ("n_kept", len(ids)),
                         ("frame_ids", ids), ("frame_indices", list(range(len(ids))))):
            videos[col].append(val)
    order = np.argsort(videos["video_id"], kind="stable")  # videos rows are sorted by video_id
    videos = {k: [col[i] for i in order] for k, col in videos.items()}
    return pa.table(frames, schema=_release_columns(FRAME_FIELDS, frames)), \
        pa.table(videos, schema=_release_columns(VIDEO_FIELDS, videos))


def _release_columns(fields: list[tuple[str, pa.DataType]], names: dict) -> pa.Schema:
    """The release schema's columns that a synthetic table fills (those the trainer reads), typed as a release's."""
    return pa.schema([(n, t) for n, t in fields if n in names])
