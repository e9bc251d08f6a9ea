"""Cached clips -> Parquet shards: a layout planned once, shards written independently.

`plan_shards` fixes everything a shard's bytes depend on before any is written: the
order (source, split, video id, frame index), the boundaries (a new frames shard once
one holds `shard_max_bytes` of images, from per-clip sizes in the cache), each clip's
first frame_id and row. So each shard is a task that any process (a local worker, a
Dask worker) can write alone, and the same clips always give the same bytes whatever
the worker count or completion order.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..contract.lock import Shard
from ..contract.schema import FRAMES_SCHEMA, release_schemas
from ..files import writing
from ..hashing import sha256_file
from .cache import ClipCache, ClipFacts
from .plan import ClipJob
from .splits import Assignment

# Small row groups keep the Hub viewer and random access cheap on image columns.
ROW_GROUP_ROWS = 100


@dataclass(frozen=True)
class Slot:
    """One clip's place in the release."""

    job: ClipJob
    at: Assignment
    frame_id: int  # first frame_id of the clip
    row: int  # first row of the clip in its frames shard
    rows: int


@dataclass(frozen=True)
class ShardTask:
    index: int  # position in the lock's shard list
    path: str  # relative to the release
    config: str
    source: str
    split: str
    slots: tuple[Slot, ...]
    fact_fields: tuple[tuple[str, str], ...] = ()  # the recipe's fact columns (name, type): the videos table's last


@dataclass(frozen=True)
class ShardResult:
    index: int
    shard: Shard
    frames: dict[str, tuple[list[int], list[str]]]  # video_id -> (frame indices, frame sha256s): frames shards


def plan_shards(jobs: list[ClipJob], splits: dict[str, Assignment], facts: dict[str, ClipFacts],
                shard_max_bytes: int, fact_fields: list[tuple[str, str]]) -> list[ShardTask]:
    """Every shard of the release, frames shards first (in frame_id order), then videos shards."""
    by_part: dict[tuple[str, str], list[ClipJob]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (j.source, splits[j.video_id].split, j.video_id)):
        by_part[(job.source, splits[job.video_id].split)].append(job)
    frames: list[tuple[str, str, list[Slot]]] = []
    videos: list[tuple[str, str, list[Slot]]] = []
    frame_id = 0
    for (source, split), part in by_part.items():
        groups: list[list[Slot]] = [[]]
        size = row = 0
        for job in part:
            f = facts[job.key]
            if groups[-1] and size + f.png_bytes > shard_max_bytes:
                groups.append([])
                size = row = 0
            groups[-1].append(Slot(job, splits[job.video_id], frame_id, row, f.rows))
            size += f.png_bytes
            row += f.rows
            frame_id += f.rows
        frames += [(source, split, g) for g in groups]
        videos.append((source, split, [s for g in groups for s in g]))
    tasks = []
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for source, split, _ in frames:
        counts[(source, split)] += 1
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for source, split, slots in frames:
        i = seen[(source, split)]
        seen[(source, split)] += 1
        path = f"data/frames/{source}/{split}-{i:05d}-of-{counts[(source, split)]:05d}.parquet"
        tasks.append(ShardTask(len(tasks), path, "frames", source, split, tuple(slots)))
    for source, split, slots in videos:
        tasks.append(ShardTask(len(tasks), f"data/videos/{source}/{split}-00000-of-00001.parquet", "videos",
                               source, split, tuple(slots), tuple(fact_fields)))
    return tasks


def write_shard(task: ShardTask, cache_root: str, out: str) -> ShardResult:
    """Write one shard under `out` from the cache (entry point of a worker)."""
    cache = ClipCache(Path(cache_root))
    final = Path(out) / task.path
    final.parent.mkdir(parents=True, exist_ok=True)
    # written beside and renamed into place: a task Dask reruns next to a lost worker that is
    # still writing never interleaves with it in one file
    path = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    frames: dict[str, tuple[list[int], list[str]]] = {}
    with writing(final, path):  # a full disk leaves no half shard, and one line naming it
        if task.config == "frames":
            with pq.ParquetWriter(path, FRAMES_SCHEMA, **_parquet_options(FRAMES_SCHEMA)) as writer:
                for slot in task.slots:
                    table, facts = cache.read_result(slot.job.key)
                    writer.write_table(_frame_table(slot, table, facts), row_group_size=ROW_GROUP_ROWS)
                    frames[slot.job.video_id] = (table.column("frame_index").to_pylist(),
                                                 table.column("frame_sha256").to_pylist())
            rows = sum(s.rows for s in task.slots)
        else:
            video_rows = []
            for slot in task.slots:
                table, facts = cache.read_index(slot.job.key)
                video_rows.append(_video_row(slot, facts, table.column("frame_index").to_pylist()))
            schema = release_schemas(task.fact_fields)["videos"]  # a fact of another source only: null here
            pq.write_table(pa.Table.from_pylist(video_rows, schema=schema), path, row_group_size=ROW_GROUP_ROWS,
                           **_parquet_options(schema))
            rows = len(video_rows)
        shard = Shard(path=task.path, config=task.config, source=task.source, split=task.split, rows=rows,
                      bytes=path.stat().st_size, sha256=sha256_file(path))
        os.replace(path, final)
    return ShardResult(task.index, shard, frames)


def _leaf_paths(schema: pa.Schema) -> list[str]:
    def walk(name: str, dtype: pa.DataType) -> list[str]:
        if pa.types.is_struct(dtype):
            return [p for f in dtype for p in walk(f"{name}.{f.name}", f.type)]
        if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
            return walk(f"{name}.list.element", dtype.value_type)
        return [name]

    return [p for f in schema for p in walk(f.name, f.type)]


def _parquet_options(schema: pa.Schema) -> dict:
    """zstd for the table's facts; PNG bytes are stored as they are (already deflated)."""
    codecs = {path: "NONE" if path == "image.bytes" else "ZSTD" for path in _leaf_paths(schema)}
    return {"compression": codecs, "write_statistics": True}


def _spacing(facts: ClipFacts) -> tuple[float | None, float | None]:
    return facts.spacing_mm or (None, None)


def _frame_table(slot: Slot, table: pa.Table, facts: ClipFacts) -> pa.Table:
    """A clip's frame rows, built column by column (the PNG bytes are never copied into Python)."""
    job, at, n = slot.job, slot.at, table.num_rows
    sx, sy = _spacing(facts)
    per_clip = {
        "source": job.source, "video_id": job.video_id, "label": job.label, "label_id": job.label_id,
        "us4_label": job.us4_label, "split": at.split, "fold": at.fold, "group": at.group,
        "crop_box": list(facts.crop_box), "probe": job.probe, "organ": job.organ, "colour": facts.colour,
        "spacing_x_mm": sx, "spacing_y_mm": sy, "clip_sha256": job.sha256,
    }
    columns = {
        "image": pa.StructArray.from_arrays([table.column("png").combine_chunks(), pa.nulls(n, pa.string())],
                                            fields=list(FRAMES_SCHEMA.field("image").type)),
        "frame_id": pa.array(range(slot.frame_id, slot.frame_id + n), pa.int64()),
        **{name: table.column(name) for name in ("frame_index", "pts", "width", "height", "frame_sha256", "phash")},
        **{name: pa.array([value] * n, FRAMES_SCHEMA.field(name).type) for name, value in per_clip.items()},
    }
    return pa.table([columns[name] for name in FRAMES_SCHEMA.names], schema=FRAMES_SCHEMA)


def _video_row(slot: Slot, facts: ClipFacts, frame_indices: list[int]) -> dict:
    job, at, info, text = slot.job, slot.at, facts.info, facts.text
    sx, sy = _spacing(facts)
    return {
        "video_id": job.video_id, "source": job.source, "path": job.rel_path, "label": job.label,
        "label_id": job.label_id, "us4_label": job.us4_label, "split": at.split, "fold": at.fold,
        "group": at.group, "probe": job.probe, "organ": job.organ, "licence": job.licence,
        "input": job.input, "container": info.container, "codec": info.codec,
        "transfer_syntax": info.transfer_syntax, "fps": info.fps or None, "timing": info.timing,
        "n_frames": info.n_frames, "duration": info.duration, "orig_width": info.width, "orig_height": info.height,
        "rotation": info.rotation, "crop_box": list(facts.crop_box), "colour": facts.colour,
        "spacing_x_mm": sx, "spacing_y_mm": sy, "text_boxes": [list(b) for b in text.boxes],
        "text_action": text.action,
        "attributes": json.dumps(info.attributes, sort_keys=True) if info.attributes else None,
        "clip_sha256": job.sha256, "n_kept": slot.rows, "n_duplicates_dropped": facts.n_duplicates_dropped,
        "frame_ids": list(range(slot.frame_id, slot.frame_id + slot.rows)), "frame_indices": frame_indices,
        **job.facts,
    }
