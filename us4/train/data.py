"""A release's frames, decoded once into memory, and the video index that drives sampling.

Functions take pyarrow tables (the release's `frames` and `videos` configs) so that
tests can build small releases in memory. Frames are decoded with PIL once, in
threads, converted to grey and resized to the run's input size; from then on the
trainer only indexes one uint8 tensor.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from ..errors import TrainError
from ..system import available_cores

FRAME_COLUMNS = ["image", "frame_id"]
_DECODE_CHUNK = 1024
VIDEO_COLUMNS = ["video_id", "label", "label_id", "us4_label", "split", "fold", "clip_sha256", "frame_ids"]


def decode_png(data: bytes, size: int) -> np.ndarray:
    """PNG (or any PIL-readable) bytes -> size x size uint8 grey array."""
    with Image.open(io.BytesIO(data)) as im:
        grey = im.convert("L") if im.mode != "L" else im
        # squashing to a square, as the reference's Resize((224, 224)) does
        return np.asarray(grey.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def decode_images(images: pa.ChunkedArray | pa.Array, size: int, threads: int | None = None) -> torch.Tensor:
    """The `image` column (struct<bytes, path>) -> uint8 tensor N x 1 x size x size."""
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    data = images.field("bytes")
    if data.null_count:
        raise TrainError("frames table has images without bytes; a release stores PNG bytes inline")
    out = np.empty((len(data), 1, size, size), dtype=np.uint8)
    # zlib inflate and PIL's resize release the GIL: threads scale on this work. Python bytes
    # objects are made a chunk at a time, so a large release is not held twice in memory.
    with ThreadPoolExecutor(max_workers=threads or available_cores()) as pool:
        for start in range(0, len(data), _DECODE_CHUNK):
            blobs = data.slice(start, _DECODE_CHUNK).to_pylist()

            def work(i: int, blobs: list[bytes] = blobs, start: int = start) -> None:
                out[start + i, 0] = decode_png(blobs[i], size)

            list(pool.map(work, range(len(blobs))))
    return torch.from_numpy(out)


@dataclass
class VideoSet:
    """Frames of a set of videos, in memory, and which rows belong to which video.

    `members[v]` lists the rows of `images` of video v in the video's frame order;
    per-video columns (`labels`, `folds`, ...) are aligned with `video_ids`.
    """

    images: torch.Tensor  # uint8 N x 1 x S x S
    video_ids: list[str]
    members: list[np.ndarray]
    label_names: list[str]  # the `label` column, per video
    label_ids: np.ndarray  # int64 per video, -1 when null
    us4_labels: np.ndarray  # int64 per video, -1 when null
    splits: list[str]
    folds: np.ndarray  # int64 per video, -1 when null
    clip_sha256: list[str]  # "" when the release does not say

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.video_ids)

    def frame_counts(self, videos: np.ndarray | list[int]) -> int:
        return int(sum(len(self.members[v]) for v in videos))

    def rows_of(self, videos: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(frame rows, video index per row) of some videos, concatenated in the given order."""
        rows = [self.members[v] for v in videos]
        owner = [np.full(len(r), v, dtype=np.int64) for v, r in zip(videos, rows)]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(owner)


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64)
    return np.asarray(table.column(name).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def load_videoset(frames: pa.Table, videos: pa.Table, size: int, threads: int | None = None) -> VideoSet:
    """Decode the frames that the `videos` table's `frame_ids` name, and index them per video.

    `frames` needs `image` and `frame_id`; `videos` needs `video_id`, `label`, `frame_ids`
    (others of VIDEO_COLUMNS are optional). Videos without frames are dropped.
    """
    for need, table, what in (("image", frames, "frames"), ("frame_id", frames, "frames"),
                              ("video_id", videos, "videos"), ("frame_ids", videos, "videos"),
                              ("label", videos, "videos")):
        if need not in table.column_names:
            raise TrainError(f"release {what} table has no {need!r} column")
    keep = videos.column("frame_ids").to_pylist()
    videos = videos.filter(pa.array([bool(ids) for ids in keep]))
    keep = [ids for ids in keep if ids]
    if videos.num_rows == 0:
        raise TrainError("release has no videos with frames")

    frame_ids = np.asarray(frames.column("frame_id").to_numpy(), dtype=np.int64)
    wanted = np.fromiter((i for ids in keep for i in ids), dtype=np.int64)
    pos = np.searchsorted(frame_ids, wanted) if len(frame_ids) else np.zeros(len(wanted), np.int64)
    sorted_ok = bool(np.all(frame_ids[1:] > frame_ids[:-1])) if len(frame_ids) > 1 else True
    if not sorted_ok:
        raise TrainError("frames table is not sorted by frame_id")
    pos = np.clip(pos, 0, max(len(frame_ids) - 1, 0))
    if len(frame_ids) == 0 or not np.array_equal(frame_ids[pos], wanted):
        missing = sorted(set(wanted.tolist()) - set(frame_ids.tolist()))[:5]
        raise TrainError(f"videos table names frames the frames table lacks (frame_id {missing} ...)")
    # decode each needed frame once, in frame_id order
    uniq, inverse = np.unique(pos, return_inverse=True)
    images = decode_images(frames.column("image").take(pa.array(uniq)), size, threads)
    members, start = [], 0
    for ids in keep:
        members.append(inverse[start:start + len(ids)].astype(np.int64))
        start += len(ids)

    def strings(name: str) -> list[str]:
        if name not in videos.column_names:
            return [""] * videos.num_rows
        return [s if s is not None else "" for s in videos.column(name).to_pylist()]

    return VideoSet(
        images=images,
        video_ids=strings("video_id"),
        members=members,
        label_names=strings("label"),
        label_ids=_int_column(videos, "label_id"),
        us4_labels=_int_column(videos, "us4_label"),
        splits=strings("split"),
        folds=_int_column(videos, "fold"),
        clip_sha256=strings("clip_sha256"),
    )
