"""Cached clips -> Parquet shards, in one fixed order, streaming clip by clip.

Order: split, then video_id, then frame index. Shard boundaries fall between clips
once a shard holds `shard_max_bytes` of images, so the same clips always give the
same shards, whatever order the workers finished in.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..hashing import sha256_file
from ..release.schema import FRAMES_SCHEMA, VIDEOS_SCHEMA
from .cache import ClipCache
from .plan import ClipJob

# Small row groups keep the Hub viewer and random access cheap on image columns.
ROW_GROUP_ROWS = 100


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


@dataclass
class Written:
    shards: list[dict] = field(default_factory=list)
    lineage: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in ("clip_sha256", "frame_index", "pts", "frame_sha256", "shard", "row")})
    videos: int = 0
    frames: int = 0
    duplicates_dropped: int = 0
    by_split_label: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def write_shards(
    jobs: list[ClipJob],
    splits: dict[str, tuple[str, int | None]],
    cache: ClipCache,
    out: Path,
    shard_max_bytes: int,
    on_clip: Callable[[], None] = lambda: None,
) -> Written:
    """Write data/frames and data/videos under `out` from the cached clips of `jobs`."""
    ordered = sorted(jobs, key=lambda j: (splits[j.video_id][0], j.video_id))
    by_split: dict[str, list[ClipJob]] = {}
    for job in ordered:
        by_split.setdefault(splits[job.video_id][0], []).append(job)
    result = Written()
    frame_id = 0
    for split, split_jobs in by_split.items():
        groups = _group_by_bytes(split_jobs, cache, shard_max_bytes)
        video_rows: list[dict] = []
        for n, group in enumerate(groups):
            rel = f"data/frames/{split}-{n:05d}-of-{len(groups):05d}.parquet"
            shard_index = len(result.shards)
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            row_in_shard = 0
            with pq.ParquetWriter(path, FRAMES_SCHEMA, **_parquet_options(FRAMES_SCHEMA)) as writer:
                for job in group:
                    table, facts = cache.read_result(job.key)
                    n = table.num_rows
                    writer.write_table(_frame_table(job, splits[job.video_id], table, facts, frame_id),
                                       row_group_size=ROW_GROUP_ROWS)
                    indices = table.column("frame_index").to_pylist()
                    ids = list(range(frame_id, frame_id + n))
                    video_rows.append(_video_row(job, splits[job.video_id], facts, ids, indices))
                    lin = result.lineage
                    lin["clip_sha256"] += [job.sha256] * n
                    lin["frame_index"] += indices
                    lin["pts"] += table.column("pts").to_pylist()
                    lin["frame_sha256"] += table.column("frame_sha256").to_pylist()
                    lin["shard"] += [shard_index] * n
                    lin["row"] += list(range(row_in_shard, row_in_shard + n))
                    row_in_shard += n
                    frame_id += n
                    result.videos += 1
                    result.duplicates_dropped += facts["n_duplicates_dropped"]
                    tally = result.by_split_label.setdefault(split, {}).setdefault(
                        f"{job.source}/{job.label}", {"videos": 0, "frames": 0})
                    tally["videos"] += 1
                    tally["frames"] += n
                    on_clip()
            result.shards.append(_entry(out, rel, "frames", split, row_in_shard))
        rel = f"data/videos/{split}-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(video_rows, schema=VIDEOS_SCHEMA), out / _mkparent(out, rel),
                       row_group_size=ROW_GROUP_ROWS, **_parquet_options(VIDEOS_SCHEMA))
        result.shards.append(_entry(out, rel, "videos", split, len(video_rows)))
    result.frames = frame_id
    return result


def _mkparent(out: Path, rel: str) -> str:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    return rel


def _group_by_bytes(jobs: list[ClipJob], cache: ClipCache, limit: int) -> list[list[ClipJob]]:
    groups: list[list[ClipJob]] = [[]]
    size = 0
    for job in jobs:
        n = cache.read_facts(job.key)["png_bytes"]
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(job)
        size += n
    return groups


def _entry(out: Path, rel: str, config: str, split: str, rows: int) -> dict:
    path = out / rel
    return {"path": rel, "config": config, "split": split, "rows": rows,
            "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _frame_table(job: ClipJob, split: tuple[str, int | None], table: pa.Table, facts: dict,
                 first_id: int) -> pa.Table:
    """A clip's frame rows, built column by column (the PNG bytes are never copied into Python)."""
    n = table.num_rows
    per_clip = {
        "source": job.source, "video_id": job.video_id, "label": job.label, "label_id": job.label_id,
        "us4_label": job.us4_label, "split": split[0], "fold": split[1], "crop_box": facts["crop_box"],
        "probe": job.probe, "organ": job.organ, "colour": facts["colour"], "clip_sha256": job.sha256,
    }
    columns = {
        "image": pa.StructArray.from_arrays([table.column("png").combine_chunks(), pa.nulls(n, pa.string())],
                                            fields=list(FRAMES_SCHEMA.field("image").type)),
        "frame_id": pa.array(range(first_id, first_id + n), pa.int64()),
        **{name: table.column(name) for name in ("frame_index", "pts", "width", "height", "frame_sha256", "phash")},
        **{name: pa.array([value] * n, FRAMES_SCHEMA.field(name).type) for name, value in per_clip.items()},
    }
    return pa.table([columns[name] for name in FRAMES_SCHEMA.names], schema=FRAMES_SCHEMA)


def _video_row(job: ClipJob, split: tuple[str, int | None], facts: dict, frame_ids: list[int],
               frame_indices: list[int]) -> dict:
    info = facts["info"]
    return {
        "video_id": job.video_id, "source": job.source, "path": job.rel_path, "label": job.label,
        "label_id": job.label_id, "us4_label": job.us4_label, "split": split[0], "fold": split[1],
        "probe": job.probe, "organ": job.organ, "licence": job.licence,
        "container": info["container"], "codec": info["codec"], "fps": info["fps"],
        "n_frames": info["n_frames"], "duration": info["duration"],
        "orig_width": info["width"], "orig_height": info["height"], "rotation": info["rotation"],
        "crop_box": facts["crop_box"], "colour": facts["colour"], "clip_sha256": job.sha256,
        "n_kept": len(frame_ids), "n_duplicates_dropped": facts["n_duplicates_dropped"],
        "frame_ids": frame_ids,
        "frame_indices": frame_indices,
    }
