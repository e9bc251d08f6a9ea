"""A release's frames, decoded once into memory, and the video index that drives sampling;
and the lazy path (`ReleaseIndex`, `RowGroupReader`) that `us4.torch`'s datasets read through.

Functions take pyarrow tables (the release's `frames` and `videos` configs) so that
tests can build small releases in memory. Frames are decoded with PIL once, in
threads, converted to grey and resized to the run's input size; from then on the
trainer only indexes one uint8 tensor. `decode_png` is the one resize both paths use.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..errors import ReleaseError, TrainError
from ..release.read import Release
from ..release.rows import _class_ids
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


def decode_blobs(chunks: Iterable[list[bytes]], n: int, size: int, threads: int | None = None) -> torch.Tensor:
    """`n` PNGs, given a chunk at a time -> uint8 tensor n x 1 x size x size."""
    out = np.empty((n, 1, size, size), dtype=np.uint8)
    # zlib inflate and PIL's resize release the GIL: threads scale on this work. The caller makes
    # Python bytes a chunk at a time, so a large release is not held twice in memory.
    with ThreadPoolExecutor(max_workers=threads or available_cores()) as pool:
        start = 0
        for blobs in chunks:
            def work(i: int, blobs: list[bytes] = blobs, start: int = start) -> None:
                out[start + i, 0] = decode_png(blobs[i], size)

            list(pool.map(work, range(len(blobs))))
            start += len(blobs)
    if start != n:
        raise TrainError(f"{start} images given, {n} expected")
    return torch.from_numpy(out)


def decode_images(images: pa.ChunkedArray | pa.Array, size: int, threads: int | None = None) -> torch.Tensor:
    """The `image` column (struct<bytes, path>) -> uint8 tensor N x 1 x size x size."""
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    data = images.field("bytes")
    if data.null_count:
        raise TrainError("frames table has images without bytes; a release stores PNG bytes inline")
    chunks = (data.slice(start, _DECODE_CHUNK).to_pylist() for start in range(0, len(data), _DECODE_CHUNK))
    return decode_blobs(chunks, len(data), size, threads)


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


def load_videoset(frames: pa.Table, videos: pa.Table, size: int, threads: int | None = None,
                  decode: Callable[[np.ndarray], torch.Tensor] | None = None) -> VideoSet:
    """Decode the frames that the `videos` table's `frame_ids` name, and index them per video.

    `frames` needs `image` and `frame_id`, or `frame_id` alone with `decode` (rows of `frames`,
    ascending -> their images); `videos` needs `video_id`, `label`, `frame_ids` (others of
    VIDEO_COLUMNS are optional). Videos without frames are dropped.
    """
    for need, table, what in (*((("image", frames, "frames"),) if decode is None else ()), ("frame_id", frames, "frames"),
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
    images = decode(uniq) if decode is not None else decode_images(frames.column("image").take(pa.array(uniq)), size,
                                                                   threads)
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


@dataclass(frozen=True)
class ReleaseIndex:
    """Where the frames of some clips of a release lie, from its lock alone: a few integers per
    clip (frames of a clip are consecutive rows of one shard), so it pickles small whatever the
    release's size. Item `i` of the frames is frame `i - first[v]` of clip `v`."""

    shards: tuple[str, ...]  # the frames shards' files, absolute
    video_ids: tuple[str, ...]
    sources: tuple[str, ...]
    splits: tuple[str, ...]
    label_ids: np.ndarray  # int64 per clip: the class index of its source in the release, -1 when none
    shard: np.ndarray  # int64 per clip: index in `shards`
    row: np.ndarray  # int64 per clip: its first row in that shard
    frame_id: np.ndarray  # int64 per clip: its first frame_id
    first: np.ndarray  # int64 per clip + 1: its first item; the last entry is the number of frames

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def frames(self) -> int:
        return int(self.first[-1])

    def clip_of(self, item: int) -> int:
        if not 0 <= item < self.frames:
            raise IndexError(f"frame {item} of {self.frames}")
        return int(np.searchsorted(self.first, item, side="right") - 1)

    def where(self, item: int) -> tuple[int, int, int, int]:
        """(clip, shard, row, frame_id) of item `item`."""
        v = self.clip_of(item)
        offset = item - int(self.first[v])
        return v, int(self.shard[v]), int(self.row[v]) + offset, int(self.frame_id[v]) + offset


def release_index(release: Release, split: str | None = None, sources: list[str] | None = None) -> ReleaseIndex:
    """The clips of a release (of one split, of some sources: an unknown one is an error naming
    those it has), in the lock's order, whose frames shards are here."""
    lock = release.lock
    lock.files(sources, [split] if split is not None else None)  # unknown sources or split: one line
    classes = _class_ids(lock)
    clips = [c for c in lock.clips if c.frame_index and (split is None or c.split == split)
             and (not sources or c.source in sources)]
    used = sorted({c.shard for c in clips})
    paths = [release.path(lock.shards[k].path) for k in used]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReleaseError(f"{missing[0]}: missing ({len(missing)} frames shard(s) of the clips asked for)")
    if not clips:
        raise ReleaseError(f"{release.root}: no clip with frames in {'split ' + split if split else 'the sources asked for'}")
    at = {k: i for i, k in enumerate(used)}
    label = [classes.get((c.source, c.label or ""), (-1, None))[0] for c in clips]
    return ReleaseIndex(
        shards=tuple(str(p.resolve()) for p in paths),
        video_ids=tuple(c.video_id for c in clips), sources=tuple(c.source for c in clips),
        splits=tuple(c.split for c in clips), label_ids=np.array(label, dtype=np.int64),
        shard=np.array([at[c.shard] for c in clips], dtype=np.int64), row=np.array([c.row for c in clips], dtype=np.int64),
        frame_id=np.array([c.frame_id for c in clips], dtype=np.int64),
        first=np.concatenate([[0], np.cumsum([len(c.frame_index) for c in clips])]).astype(np.int64))


class RowGroupReader:
    """PNG bytes of frames by (shard, row), read a row group at a time and only the `image` column.

    Files are opened lazily by the process that reads: a DataLoader worker opens its own, and
    pickling carries the paths alone. The last row group read is kept (consecutive items, as a
    batch or a clip holds them, are one read): memory is one row group, whatever the release's size.
    """

    def __init__(self, shards: tuple[str, ...]):
        self.shards = shards
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}
        self._held: tuple[tuple[int, int], pa.Array] | None = None

    def __getstate__(self) -> dict:
        return {"shards": self.shards}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["shards"])

    def _open(self, shard: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if shard not in self._files:
            file = pq.ParquetFile(self.shards[shard])
            sizes = [file.metadata.row_group(k).num_rows for k in range(file.num_row_groups)]
            self._files[shard] = (file, np.cumsum([0] + sizes))
        return self._files[shard]

    def png(self, shard: int, row: int) -> bytes:
        file, starts = self._open(shard)
        group = int(np.searchsorted(starts, row, side="right") - 1)
        if self._held is None or self._held[0] != (shard, group):
            images = file.read_row_group(group, columns=["image"], use_threads=False).column("image")
            self._held = ((shard, group), images.combine_chunks().field("bytes"))
        data = self._held[1][row - int(starts[group])].as_py()
        if data is None:
            raise TrainError(f"{self.shards[shard]}: row {row} has an image without bytes; a release stores PNG bytes inline")
        return data


def load_release_videoset(release: Release, size: int, threads: int | None = None) -> VideoSet:
    """`load_videoset` of a release, its PNGs read through `RowGroupReader` (as `us4.torch` reads
    them): memory holds the decoded frames and one row group, not every PNG of the release."""
    shards = release.shards("frames", present_only=True)
    reader = RowGroupReader(tuple(str(release.path(s.path)) for s in shards))
    first = np.cumsum([0] + [s.rows for s in shards])  # `frames` rows: the shards' rows in lock order

    def decode(rows: np.ndarray) -> torch.Tensor:
        shard = np.searchsorted(first, rows, side="right") - 1
        where = [(int(k), int(r - first[k])) for k, r in zip(shard, rows)]
        chunks = ([reader.png(*w) for w in where[at:at + _DECODE_CHUNK]] for at in range(0, len(where), _DECODE_CHUNK))
        return decode_blobs(chunks, len(where), size, threads)

    return load_videoset(release.frames(["frame_id"]), release.videos(), size, threads, decode)
