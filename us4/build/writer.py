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
                    frames = _frame_rows(job, splits[job.video_id], table, facts, frame_id)
                    writer.write_table(pa.Table.from_pylist(frames, schema=FRAMES_SCHEMA), row_group_size=ROW_GROUP_ROWS)
                    video_rows.append(_video_row(job, splits[job.video_id], facts, frames))
                    lin = result.lineage
                    for f in frames:
                        lin["clip_sha256"].append(job.sha256)
                        lin["frame_index"].append(f["frame_index"])
                        lin["pts"].append(f["pts"])
                        lin["frame_sha256"].append(f["frame_sha256"])
                        lin["shard"].append(shard_index)
                        lin["row"].append(row_in_shard)
                        row_in_shard += 1
                    frame_id += len(frames)
                    result.videos += 1
                    result.duplicates_dropped += facts["n_duplicates_dropped"]
                    tally = result.by_split_label.setdefault(split, {}).setdefault(
                        f"{job.source}/{job.label}", {"videos": 0, "frames": 0})
                    tally["videos"] += 1
                    tally["frames"] += len(frames)
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


def _frame_rows(job: ClipJob, split: tuple[str, int | None], table: pa.Table, facts: dict,
                first_id: int) -> list[dict]:
    common = {
        "source": job.source, "video_id": job.video_id, "label": job.label, "label_id": job.label_id,
        "us4_label": job.us4_label, "split": split[0], "fold": split[1], "crop_box": facts["crop_box"],
        "probe": job.probe, "organ": job.organ, "colour": facts["colour"], "clip_sha256": job.sha256,
    }
    rows = []
    for i, r in enumerate(table.to_pylist()):
        rows.append({
            "image": {"bytes": r["png"], "path": None},
            "frame_id": first_id + i,
            "frame_index": r["frame_index"], "pts": r["pts"],
            "width": r["width"], "height": r["height"],
            "frame_sha256": r["frame_sha256"], "phash": r["phash"],
            **common,
        })
    return rows


def _video_row(job: ClipJob, split: tuple[str, int | None], facts: dict, frames: list[dict]) -> dict:
    info = facts["info"]
    return {
        "video_id": job.video_id, "source": job.source, "path": job.rel_path, "label": job.label,
        "label_id": job.label_id, "us4_label": job.us4_label, "split": split[0], "fold": split[1],
        "probe": job.probe, "organ": job.organ, "licence": job.licence,
        "container": info["container"], "codec": info["codec"], "fps": info["fps"],
        "n_frames": info["n_frames"], "duration": info["duration"],
        "orig_width": info["width"], "orig_height": info["height"], "rotation": info["rotation"],
        "crop_box": facts["crop_box"], "colour": facts["colour"], "clip_sha256": job.sha256,
        "n_kept": len(frames), "n_duplicates_dropped": facts["n_duplicates_dropped"],
        "frame_ids": [f["frame_id"] for f in frames],
        "frame_indices": [f["frame_index"] for f in frames],
    }
