"""A release's frames, decoded once into memory or into a frame cache file that later runs map
(`frame_cache`), and the video index that drives sampling;
and the lazy path (`ReleaseIndex`, `RowGroupReader`) that `us4.torch`'s datasets read through.

Functions take pyarrow tables (the release's `frames` and `videos` configs) so that
tests can build small releases in memory. Frames are decoded with PIL once, in
threads, converted to grey and resized to the run's input size; from then on the
trainer only indexes one uint8 tensor (of the used videos' frames). `decode_png` is the one resize both paths use.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..errors import ReleaseError, TrainError
from ..release.read import Release
from ..release.rows import _class_ids
from ..system import available_cores
from .frame_cache import CachedFrames, cached_frames

FRAME_COLUMNS = ["image", "frame_id"]
_DECODE_CHUNK = 1024
VIDEO_COLUMNS = ["video_id", "label", "label_id", "us4_label", "split", "fold", "clip_sha256", "frame_ids"]


def decode_png(data: bytes, size: int) -> np.ndarray:
    """PNG (or any PIL-readable) bytes -> size x size uint8 grey array."""
    with Image.open(io.BytesIO(data)) as im:
        grey = im.convert("L") if im.mode != "L" else im
        # squashing to a square, as the reference's Resize((224, 224)) does
        return np.asarray(grey.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def decode_chunks(chunks: Iterable[list[bytes]], size: int, threads: int | None = None) -> Iterator[np.ndarray]:
    """PNGs, given a chunk at a time -> uint8 arrays len(chunk) x 1 x size x size, one per chunk."""
    # zlib inflate and PIL's resize release the GIL: threads scale on this work. The caller makes
    # Python bytes a chunk at a time, so a large release is not held twice in memory.
    with ThreadPoolExecutor(max_workers=threads or available_cores()) as pool:
        for blobs in chunks:
            yield np.stack(list(pool.map(lambda png: decode_png(png, size), blobs)))[:, None] if blobs else \
                np.zeros((0, 1, size, size), np.uint8)


def decode_blobs(chunks: Iterable[list[bytes]], n: int, size: int, threads: int | None = None) -> torch.Tensor:
    """`n` PNGs, given a chunk at a time -> uint8 tensor n x 1 x size x size."""
    out = np.empty((n, 1, size, size), dtype=np.uint8)
    start = 0
    for part in decode_chunks(chunks, size, threads):
        if start + len(part) > n:
            raise TrainError(f"more than {n} images given")
        out[start:start + len(part)] = part
        start += len(part)
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
    """Frames of a set of videos, in memory (or mapped from a frame cache file), and which rows
    belong to which video.

    `members[v]` lists the rows of `images` of video v in the video's frame order;
    per-video columns (`labels`, `folds`, ...) are aligned with `video_ids`. An index of a
    release's videos before any frame is decoded (`index_videos`) has no `images`, and its
    `members` are rows of the release's frames table.
    """

    images: torch.Tensor | None  # uint8 N x 1 x S x S
    video_ids: list[str]
    members: list[np.ndarray]
    label_names: list[str]  # the `label` column, per video
    label_ids: np.ndarray  # int64 per video, -1 when null
    us4_labels: np.ndarray  # int64 per video, -1 when null
    splits: list[str]
    folds: np.ndarray  # int64 per video, -1 when null
    clip_sha256: list[str]  # "" when the release does not say
    cache: CachedFrames | None = None  # the file `images` is mapped from

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

    def take(self, videos: np.ndarray | list[int]) -> VideoSet:
        """These videos alone, in this order (`images` unchanged: members keep their rows)."""
        v = np.asarray(videos, dtype=np.int64)
        return replace(self, video_ids=[self.video_ids[k] for k in v], members=[self.members[k] for k in v],
                       label_names=[self.label_names[k] for k in v], label_ids=self.label_ids[v],
                       us4_labels=self.us4_labels[v], splits=[self.splits[k] for k in v], folds=self.folds[v],
                       clip_sha256=[self.clip_sha256[k] for k in v])


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64)
    return np.asarray(table.column(name).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def index_videos(frame_ids: np.ndarray, videos: pa.Table) -> VideoSet:
    """The videos of the `videos` table that have frames, each with the rows of the frames table
    (whose `frame_id` column is `frame_ids`, ascending) that hold its frames; no images yet.

    `videos` needs `video_id`, `label`, `frame_ids` (others of VIDEO_COLUMNS are optional)."""
    for need in ("video_id", "frame_ids", "label"):
        if need not in videos.column_names:
            raise TrainError(f"release videos table has no {need!r} column")
    keep = videos.column("frame_ids").to_pylist()
    videos = videos.filter(pa.array([bool(ids) for ids in keep]))
    keep = [ids for ids in keep if ids]
    if videos.num_rows == 0:
        raise TrainError("release has no videos with frames")

    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    wanted = np.fromiter((i for ids in keep for i in ids), dtype=np.int64)
    if len(frame_ids) > 1 and not bool(np.all(frame_ids[1:] > frame_ids[:-1])):
        raise TrainError("frames table is not sorted by frame_id")
    pos = np.clip(np.searchsorted(frame_ids, wanted), 0, max(len(frame_ids) - 1, 0)) if len(frame_ids) else wanted
    if len(frame_ids) == 0 or not np.array_equal(frame_ids[pos], wanted):
        missing = sorted(set(wanted.tolist()) - set(frame_ids.tolist()))[:5]
        raise TrainError(f"videos table names frames the frames table lacks (frame_id {missing} ...)")

    def strings(name: str) -> list[str]:
        if name not in videos.column_names:
            return [""] * videos.num_rows
        return [s if s is not None else "" for s in videos.column(name).to_pylist()]

    return VideoSet(
        images=None,
        video_ids=strings("video_id"),
        members=np.split(pos.astype(np.int64), np.cumsum([len(ids) for ids in keep])[:-1]),
        label_names=strings("label"),
        label_ids=_int_column(videos, "label_id"),
        us4_labels=_int_column(videos, "us4_label"),
        splits=strings("split"),
        folds=_int_column(videos, "fold"),
        clip_sha256=strings("clip_sha256"),
    )


def compact(index: VideoSet) -> tuple[VideoSet, np.ndarray]:
    """(the index with each video's members renumbered to rows of the returned array, the rows
    of the frames table its videos name, ascending, each once): what is to be decoded."""
    rows, inverse = np.unique(np.concatenate(index.members), return_inverse=True)
    members = np.split(inverse.astype(np.int64), np.cumsum([len(m) for m in index.members])[:-1])
    return replace(index, members=members), rows


def load_videoset(frames: pa.Table, videos: pa.Table, size: int, threads: int | None = None) -> VideoSet:
    """Decode the frames that the `videos` table's `frame_ids` name, and index them per video.

    `frames` needs `image` and `frame_id`; `videos` as `index_videos` takes it. Videos without
    frames are dropped. (A release on disk: `load_release_videoset`.)
    """
    for need in ("image", "frame_id"):
        if need not in frames.column_names:
            raise TrainError(f"release frames table has no {need!r} column")
    vs, rows = compact(index_videos(frames.column("frame_id").to_numpy(), videos))
    # each needed frame decoded once, in frame_id order
    vs.images = decode_images(frames.column("image").take(pa.array(rows)), size, threads)
    return vs


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


def release_videos(release: Release) -> VideoSet:
    """`index_videos` of a release: its videos table and the frames table's `frame_id` column alone."""
    return index_videos(release.frames(["frame_id"]).column("frame_id").to_numpy(), release.videos())


def release_pngs(release: Release, rows: np.ndarray) -> Iterator[list[bytes]]:
    """PNG bytes of some rows of a release's frames table (ascending), a chunk at a time, read
    through `RowGroupReader`: memory holds one chunk and one row group, whatever the release's size."""
    shards = release.shards("frames", present_only=True)
    reader = RowGroupReader(tuple(str(release.path(s.path)) for s in shards))
    first = np.cumsum([0] + [s.rows for s in shards])  # `frames` rows: the shards' rows in lock order
    for at in range(0, len(rows), _DECODE_CHUNK):
        part = np.asarray(rows[at:at + _DECODE_CHUNK], dtype=np.int64)
        shard = np.searchsorted(first, part, side="right") - 1
        yield [reader.png(int(k), int(r - first[k])) for k, r in zip(shard, part)]


def load_release_videoset(release: Release, size: int, threads: int | None = None, *,
                          index: VideoSet | None = None, videos: np.ndarray | None = None,
                          cache: Path | None = None, say: Callable[[str], None] | None = None) -> VideoSet:
    """The frames of a release's videos (of `videos`, rows of `index`, default `release_videos`:
    the others are not decoded), read as `us4.torch` reads them. With `cache` (a folder), mapped
    from the frame cache file of these frames at `size`, which is written first where it is not
    there (`frame_cache.cached_frames`; `say` gets its lines); without, decoded into memory."""
    index = release_videos(release) if index is None else index
    vs, rows = compact(index if videos is None else index.take(videos))
    if cache is None:
        vs.images = decode_blobs(release_pngs(release, rows), len(rows), size, threads)
        return vs
    mapped, vs.cache = cached_frames(cache, release=release.name, version=release.version,
                                     lock_sha256=release.lock.sha256, rows=rows, size=size,
                                     decode=lambda r: decode_chunks(release_pngs(release, r), size, threads),
                                     say=say or (lambda _msg: None))
    vs.images = torch.from_numpy(mapped)
    return vs
