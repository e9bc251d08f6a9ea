"""One clip -> its kept, cropped, cleaned and encoded frames in the cache, or a Failure value.

Runs in worker processes (local or on a Dask cluster). Every step is a media call; this
module strings them together in the recipe's order. A clip's own problem (a media error:
unreadable, truncated, unsupported, a crop that does not fit, text where the recipe says
exclude) is a Failure, cached and published in the ledger. Anything else (a bug in us4,
a full disk, a permission error) propagates, is not cached, and ends the build: the next
run retries that clip.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..contract.lock import Failure, Stage
from ..media import (
    Box,
    MediaError,
    SamplingPolicy,
    detect_scan_region,
    dhash,
    encode_png,
    is_colour,
    largest_tissue_region,
    near_duplicate,
    pixel_sha256,
    thumbnail,
    tissue_regions,
)
from ..media import text as text_check
from ..media.clips import decode_clip, probe_clip
from ..media.gate import attempt
from ..files import atomic_write, private_dir
from .cache import CLIP_SCHEMA, ClipCache
from .plan import ClipJob, hide_names

#: folder of the local files that holds the text read per clip (named by cache key)
TEXT_READ = "text-read"
#: facts of a clip's description that may be published (never its path)
_PUBLIC_INFO = ("container", "codec", "fps", "n_frames", "duration", "width", "height", "rotation", "kind",
                "transfer_syntax", "timing", "attributes")


def ingest_in_worker(job: ClipJob, cache_root: str, local_root: str) -> Failure | int:
    """Entry point of a worker: ingest one clip into the cache under `cache_root`; the text
    read in it (which may identify someone) goes to `local_root`, outside the release."""
    return ingest_clip(job, ClipCache(Path(cache_root)), Path(local_root))


def ingest_clip(job: ClipJob, cache: ClipCache, local_root: Path) -> Failure | int:
    """Ingest one clip into the cache; return its number of kept frames or its Failure."""
    result = _frames_of(job)
    if isinstance(result, Failure):
        cache.write_failure(job.key, result)
        return result
    table, facts, read = result
    if read:
        private_dir(local_root)
        atomic_write(private_dir(local_root / TEXT_READ) / f"{job.key}.json", json.dumps(read).encode(), private=True)
    cache.write_result(job.key, table, facts)
    return table.num_rows


def _central(grey: np.ndarray) -> np.ndarray:
    """The middle half of the scan region: inside any sector, so the hash follows the
    anatomy, not the shape of the fan that every frame of a probe shares."""
    h, w = grey.shape
    return grey[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w]


def _fail(job: ClipJob, stage: Stage, reason: str) -> Failure:
    return Failure(source=job.source, video_id=job.video_id, sha256=job.sha256, stage=stage, reason=reason)


def _reason(job: ClipJob, exc: MediaError) -> str:
    """The cause, naming the file of a multi-file clip (a series, an image sequence) that has
    it: by name where the source's ids are paths; where names may identify (`ids: hash`),
    every file path or name in the reason becomes its position in the clip, in one pass (so
    a position just written is never read as a name)."""
    files = job.ref.files
    reason = exc.reason
    if len(files) > 1 and exc.path in files:
        reason = f"{Path(exc.path).name}: {reason}"
    if job.rel_path is None:
        reason = hide_names(reason, {name: f"file {k + 1} of {len(files)}" for k, f in enumerate(files)
                                     for name in (str(f), Path(f).name)})
    return reason


def _frames_of(job: ClipJob) -> Failure | tuple[pa.Table, dict, list[str]]:
    # the gate: the clip's problem comes back as a value, ours (disk, memory, a bug) stops the build
    info = attempt(probe_clip, job.ref, job.params["max_frame_pixels"], where=job.ref.files[0])  # size from headers
    if isinstance(info, MediaError):
        return _fail(job, Stage.PROBE, _reason(job, info))
    wanted = SamplingPolicy.from_dict(job.params["sampling"]).indices(info.n_frames, info.fps)
    if not wanted:
        return _fail(job, Stage.SAMPLE, f"the sampling policy keeps no frame of {info.n_frames}")
    decoded = attempt(decode_clip, job.ref, wanted, where=job.ref.files[0])
    if isinstance(decoded, MediaError):
        return _fail(job, Stage.DECODE, _reason(job, decoded))
    greys = [f.grey for f in decoded]
    height, width = greys[0].shape
    crop = job.params["crop"]
    fallback = False
    views_left_out = 0  # the other views of a multi-view file, when the recipe keeps the largest
    spacing = info.spacing_mm
    if crop["mode"] == "box":
        box = Box.from_list(crop["box"])
        if box.x + box.w > width or box.y + box.h > height:
            return _fail(job, Stage.CROP, f"crop box {crop['box']} lies outside the {width}x{height} frame")
    elif crop["mode"] == "none":
        box = Box(0, 0, width, height)
    elif job.params.get("view") is not None:  # one view of a multi-view file (recipe regions: each)
        views = tissue_regions(info.regions)
        if job.params["view"] >= len(views):
            return _fail(job, Stage.CROP, f"the file declares {len(views)} 2D regions, not view {job.params['view'] + 1}")
        box, spacing = views[job.params["view"]].box, views[job.params["view"]].spacing_mm or spacing
    elif (region := largest_tissue_region(info.regions)) is not None:
        box, spacing = region.box, region.spacing_mm or spacing
        views_left_out = len(tissue_regions(info.regions)) - 1
    else:
        box = detect_scan_region(greys)
        fallback = box == Box(0, 0, width, height)
    colour = is_colour(decoded, box)

    text = _text_facts(job, info, decoded, box)
    if text["found"] and job.params["text"] == "exclude":
        return _fail(job, Stage.TEXT, f"burned-in text found ({text['why']}) and the recipe says exclude")
    masks = [Box.from_list(b) for b in text["boxes"]] if text["found"] and job.params["text"] == "mask" else []
    mask = (lambda a: text_check.mask_text(a, masks)) if masks else (lambda a: a)

    rows: dict[str, list] = {name: [] for name in CLIP_SCHEMA.names}
    previous = None
    dropped = 0
    threshold = job.params["dedup"]
    level = job.params["png_compress_level"]
    for frame, grey in zip(decoded, greys):
        grey_crop = mask(box.apply(grey))
        if previous is not None and threshold > 0 and near_duplicate(previous, grey_crop, threshold):
            dropped += 1
            continue
        previous = grey_crop
        pixels = mask(box.apply(frame.to_rgb())) if colour else grey_crop
        rows["frame_index"].append(frame.index)
        rows["pts"].append(frame.pts)
        rows["png"].append(encode_png(pixels, level))
        rows["frame_sha256"].append(pixel_sha256(pixels))
        rows["phash"].append(dhash(_central(grey_crop)))
        rows["thumb"].append(thumbnail(pixels).tobytes())
        rows["width"].append(pixels.shape[1])
        rows["height"].append(pixels.shape[0])
    public = {k: v for k, v in info.to_dict().items() if k in _PUBLIC_INFO}
    facts = {
        "info": public,
        "crop_box": box.as_list(),
        "crop_fallback": fallback,
        "colour": bool(colour),
        "spacing_mm": list(spacing) if spacing else None,
        "text": {k: v for k, v in text.items() if k not in ("why", "read")},
        "n_duplicates_dropped": dropped,
        "views_left_out": views_left_out,
        "region_problems": list(info.region_problems),
        "png_bytes": sum(len(b) for b in rows["png"]),
        "rows": len(rows["png"]),
    }
    json.dumps(facts)  # a fact that cannot be serialised is a bug here, not the clip's failure
    return pa.Table.from_pydict(rows, schema=CLIP_SCHEMA), facts, text["read"]


def _text_facts(job: ClipJob, info, decoded: list, box: Box) -> dict:
    """Burned-in text inside the crop, on the first, middle and last kept frames (and more,
    as `frames_to_check` says). Boxes are in the stored image's coordinates; the text read
    goes only to the local files beside the release, never into the release or its cache."""
    burned_in = info.burned_in
    if job.params["text"] == "off":  # no detector; the file's own word still counts, as a warning
        why = "the file declares Burned In Annotation = YES" if burned_in else ""
        return {"checked": False, "found": burned_in, "boxes": [], "burned_in": burned_in,
                "action": "warned" if burned_in else "none", "read": [], "why": why}
    try:
        picks = text_check.frames_to_check(len(decoded))
        found = text_check.detect_text([decoded[i].to_rgb() if decoded[i].rgb is not None else decoded[i].grey
                                        for i in picks], box)
        checked = True
    except text_check.TextEngineMissing:
        if job.params["text"] != "warn":  # the plan refuses this up front; a worker without the extra is ours
            raise
        found, checked = [], False
    boxes = [[t.x - box.x, t.y - box.y, t.w, t.h] for t in found]
    why = [f"{len(boxes)} text box{'es' if len(boxes) != 1 else ''}"] if boxes else []
    if burned_in:
        why.append("the file declares Burned In Annotation = YES")
    # masked/warned: boxes found inside the crop; declared: the file says text is burned in, but
    # none lies inside the crop (cropping removed it); none: nothing found
    action = ("none" if not why else "declared" if not boxes and job.params["text"] == "mask"
              else "masked" if job.params["text"] == "mask" else "warned")
    return {"checked": checked, "found": bool(why), "boxes": boxes, "burned_in": burned_in, "action": action,
            "read": [t.text for t in found], "why": ", ".join(why)}
