"""Prove that splits hold whole videos, and find near-duplicate frames across splits."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from .read import Release

_CHUNK = 2048  # rows of the pairwise distance matrix computed at once (bounded memory)
_THUMB = 64


@dataclass(frozen=True)
class NearDuplicate:
    distance: int  # Hamming distance of the two 64-bit difference hashes
    difference: float  # mean absolute grey-level difference of 64x64 thumbnails
    a: tuple[str, int, str]  # (video_id, frame_index, split)
    b: tuple[str, int, str]


@dataclass
class Audit:
    videos: int = 0
    frames: int = 0
    leaks: list[str] = field(default_factory=list)  # videos found in more than one split
    candidates: int = 0  # cross-split pairs whose hashes are close
    near_duplicates: list[NearDuplicate] = field(default_factory=list)  # confirmed on pixels

    @property
    def ok(self) -> bool:
        return not self.leaks


def audit_release(release: Release, max_distance: int = 6, max_difference: float = 4.0) -> Audit:
    """Check split integrity from both tables, then list cross-split frame pairs whose
    perceptual hashes lie within `max_distance` bits and whose thumbnails differ by at
    most `max_difference` grey levels on average, closest first."""
    frames = release.frames(["frame_id", "video_id", "frame_index", "split", "phash"]).to_pandas()
    videos = release.videos(["video_id", "split"]).to_pandas()
    result = Audit(videos=videos["video_id"].nunique(), frames=len(frames))
    seen = frames.groupby("video_id")["split"].unique()
    declared = videos.groupby("video_id")["split"].unique()
    for video_id in sorted(set(seen.index) | set(declared.index)):
        splits = set(seen.get(video_id, [])) | set(declared.get(video_id, []))
        if len(splits) > 1:
            result.leaks.append(f"{video_id}: in splits {sorted(splits)}")
    pairs = _close_hashes(frames["phash"].to_numpy(dtype=np.uint64),
                          frames["split"].factorize()[0], max_distance)
    result.candidates = len(pairs)
    thumbs = _thumbnails(release, {int(frames["frame_id"].iat[i]) for p in pairs for i in p[1:]})
    for dist, a, b in pairs:
        ta, tb = thumbs[int(frames["frame_id"].iat[a])], thumbs[int(frames["frame_id"].iat[b])]
        diff = float(np.abs(ta - tb).mean())
        if diff <= max_difference:
            result.near_duplicates.append(NearDuplicate(dist, round(diff, 2), _ref(frames, a), _ref(frames, b)))
    result.near_duplicates.sort(key=lambda p: (p.difference, p.distance, p.a, p.b))
    return result


def _close_hashes(hashes: np.ndarray, split_codes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    out = []
    for start in range(0, len(hashes), _CHUNK):
        dist = np.bitwise_count(hashes[start:start + _CHUNK, None] ^ hashes[None, :])
        close = (dist <= max_distance) & (split_codes[start:start + _CHUNK, None] != split_codes[None, :])
        for i, j in zip(*np.nonzero(close)):
            if start + i < j:  # each unordered pair once
                out.append((int(dist[i, j]), int(start + i), int(j)))
    return out


def _thumbnails(release: Release, wanted: set[int]) -> dict[int, np.ndarray]:
    """Grey 64x64 thumbnails of the wanted frames, streaming the shards batch by batch."""
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    for shard in release.shards("frames"):
        for batch in pq.ParquetFile(release.root / shard["path"]).iter_batches(columns=["frame_id", "image"]):
            ids = batch.column("frame_id").to_pylist()
            images = batch.column("image")
            for k, frame_id in enumerate(ids):
                if frame_id in wanted:
                    png = images[k]["bytes"].as_py()
                    img = Image.open(io.BytesIO(png)).convert("L").resize((_THUMB, _THUMB), Image.BILINEAR)
                    out[frame_id] = np.asarray(img, dtype=np.float32)
    return out


def _ref(frames, row: int) -> tuple[str, int, str]:
    r = frames.iloc[row]
    return (r["video_id"], int(r["frame_index"]), r["split"])
