"""One clip -> its kept, cropped, encoded frames in the cache, or a Failure value.

Runs in worker processes. Every step is a media call; this module only strings
them together in the recipe's order and turns media errors into ledger entries.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..media import (
    Box,
    MediaError,
    SamplingPolicy,
    decode,
    detect_scan_region,
    dhash,
    encode_png,
    is_colour,
    near_duplicate,
    pixel_sha256,
    probe,
)
from .cache import CLIP_SCHEMA, ClipCache
from .failure import Failure
from .plan import ClipJob


def ingest_in_worker(job: ClipJob, cache_root: str) -> Failure | int:
    """Entry point of a worker process: an unforeseen error in one clip is that clip's
    failure, recorded in the ledger with its type, not the end of the build."""
    cache = ClipCache(Path(cache_root))
    try:
        return ingest_clip(job, cache)
    except Exception as exc:  # noqa: BLE001
        failure = _fail(job, "ingest", f"unexpected {type(exc).__name__}: {exc}")
        cache.write_failure(job.key, failure)
        return failure


def ingest_clip(job: ClipJob, cache: ClipCache) -> Failure | int:
    """Ingest one clip into the cache; return its number of kept frames or its Failure."""
    result = _frames_of(job)
    if isinstance(result, Failure):
        cache.write_failure(job.key, result)
        return result
    table, facts = result
    cache.write_result(job.key, table, facts)
    return table.num_rows


def _central(grey):
    """The middle half of the scan region: inside any sector, so the hash follows the
    anatomy, not the shape of the fan that every frame of a probe shares."""
    h, w = grey.shape
    return grey[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w]


def _fail(job: ClipJob, stage: str, reason: str) -> Failure:
    return Failure(job.source, job.rel_path, job.sha256, stage, reason)


def _frames_of(job: ClipJob) -> Failure | tuple[pa.Table, dict]:
    try:
        info = probe(job.path)
    except MediaError as exc:
        return _fail(job, "probe", exc.reason)
    wanted = SamplingPolicy.from_dict(job.params["sampling"]).indices(info.n_frames, info.fps)
    if not wanted:
        return _fail(job, "sample", f"the sampling policy keeps no frame of {info.n_frames}")
    try:
        decoded = decode(job.path, wanted)
    except MediaError as exc:
        return _fail(job, "decode", exc.reason)
    greys = [f.grey for f in decoded]
    crop = job.params["crop"]
    height, width = greys[0].shape
    if crop["mode"] == "box":
        box = Box.from_list(crop["box"])
        if box.x + box.w > width or box.y + box.h > height:
            return _fail(job, "crop", f"crop box {crop['box']} lies outside the {width}x{height} frame")
    elif crop["mode"] == "none":
        box = Box(0, 0, width, height)
    else:
        box = detect_scan_region(greys)
    colour = is_colour(decoded, box)
    rows: dict[str, list] = {name: [] for name in CLIP_SCHEMA.names}
    previous = None
    dropped = 0
    threshold = job.params["dedup"]
    level = job.params["png_compress_level"]
    for frame, grey in zip(decoded, greys):
        grey_crop = box.apply(grey)
        if previous is not None and threshold > 0 and near_duplicate(previous, grey_crop, threshold):
            dropped += 1
            continue
        previous = grey_crop
        pixels = box.apply(frame.to_rgb()) if colour else grey_crop
        rows["frame_index"].append(frame.index)
        rows["pts"].append(frame.pts)
        rows["png"].append(encode_png(pixels, level))
        rows["frame_sha256"].append(pixel_sha256(pixels))
        rows["phash"].append(dhash(_central(grey_crop)))
        rows["width"].append(pixels.shape[1])
        rows["height"].append(pixels.shape[0])
    facts = {
        "info": info.to_dict(),
        "crop_box": box.as_list(),
        "colour": bool(colour),
        "n_duplicates_dropped": dropped,
        "png_bytes": sum(len(b) for b in rows["png"]),
    }
    return pa.Table.from_pydict(rows, schema=CLIP_SCHEMA), facts
