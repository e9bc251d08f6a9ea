"""One clip -> its kept, cropped, cleaned and encoded frames in the cache, or a Failure value.

Runs in worker processes (local or on a Dask cluster). Ingest is the list `STAGES`, run in
order over one clip: each stage is a function (job, what the stages before learnt) -> that
state with more filled in, or `Refused(reason)`, and is named by the ledger stage its failures
are recorded under; a new stage is one function and one line in the list. A clip's own
problem (a media error raised in a stage: unreadable, truncated, unsupported; a refusal: a crop
that does not fit, text where the recipe says exclude) is a Failure, cached and published in
the ledger; `_frames_of` is the one place that decides it. Anything else (a bug in us4, a full
disk, a permission error) propagates, is not cached, and ends the build: the next run retries
that clip. The stages that pass keep, encode and describe the frames (`_keep`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..contract.lock import Failure, Stage
from ..media import (
    Box,
    ClipInfo,
    DecodedFrame,
    MediaError,
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
from ..media.gate import OursError, attempt
from ..errors import StorageError
from ..files import storage_error
from ..files import atomic_write, private_dir
from .cache import CLIP_SCHEMA, ClipCache, ClipDescription, ClipFacts, TextFacts
from .plan import ClipJob, hide_names

#: folder of the local files that holds the text read per clip (named by cache key)
TEXT_READ = "text-read"


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


def _through_gate(job: ClipJob, step: Step, state: ClipState) -> ClipState | Refused | MediaError:
    """One stage through the gate. The line that stops the build names the clip by its published
    id; where the source's ids are content hashes, it names no path or file name of the clip
    either (an OSError's line names its file), as no reason the build publishes does."""
    try:
        return attempt(step, job, state, where=job.video_id)
    except (OursError, OSError) as exc:  # the gate lets only storage failures through as OSErrors
        if job.rel_path is not None:  # ids: path: the path is published already
            raise
        line = str(storage_error(exc) or exc) if isinstance(exc, OSError) else str(exc)
        withheld = hide_names(line, {name: "the file" for f in job.ref.files for name in (str(f), Path(f).name)})
        raise (StorageError if isinstance(exc, OSError) else OursError)(withheld) from None


@dataclass(frozen=True)
class ClipState:
    """What the stages have learnt of one clip so far (each fills in its part)."""

    info: ClipInfo | None = None  # probe
    wanted: tuple[int, ...] = ()  # sample: the frame indices to keep
    decoded: tuple[DecodedFrame, ...] = ()  # decode
    greys: tuple[np.ndarray, ...] = ()
    box: Box | None = None  # crop: the image inside the frame, and its mm per pixel where known
    spacing: tuple[float, float] | None = None
    fallback: bool = False  # no scan region found: the full frame
    views_left_out: int = 0  # the other views of a multi-view file, when the recipe keeps the largest
    text: TextFacts | None = None  # text: what was found, and the boxes painted black
    masks: tuple[Box, ...] = ()
    read: tuple[str, ...] = ()  # the text read: for the local files only


@dataclass(frozen=True)
class Refused:
    """A stage's verdict that the clip cannot be used (published in the ledger, under the stage)."""

    reason: str


Step = Callable[[ClipJob, ClipState], ClipState | Refused]


def _probe(job: ClipJob, state: ClipState) -> ClipState:
    return replace(state, info=probe_clip(job.ref, job.params.max_frame_pixels))  # the size from headers


def _sample(job: ClipJob, state: ClipState) -> ClipState | Refused:
    wanted = job.params.sampling.indices(state.info.n_frames, state.info.fps)
    if not wanted:
        return Refused(f"the sampling policy keeps no frame of {state.info.n_frames}")
    return replace(state, wanted=tuple(wanted))


def _decode(job: ClipJob, state: ClipState) -> ClipState:
    decoded = tuple(decode_clip(job.ref, state.wanted))
    return replace(state, decoded=decoded, greys=tuple(f.grey for f in decoded))


def _crop(job: ClipJob, state: ClipState) -> ClipState | Refused:
    """The recipe's box, the full frame, the scanner's 2D region (one view, or the largest), or
    the detected scan region."""
    info, crop, view = state.info, job.params.crop, job.params.view
    height, width = state.greys[0].shape
    spacing, fallback, views_left_out = info.spacing_mm, False, 0
    if crop.mode == "box":
        box = Box.from_list(crop.box)
        if box.x + box.w > width or box.y + box.h > height:
            return Refused(f"crop box {list(crop.box)} lies outside the {width}x{height} frame")
    elif crop.mode == "none":
        box = Box(0, 0, width, height)
    elif view is not None:  # one view of a multi-view file (recipe regions: each)
        views = tissue_regions(info.regions)
        if view >= len(views):
            return Refused(f"the file declares {len(views)} 2D regions, not view {view + 1}")
        box, spacing = views[view].box, views[view].spacing_mm or spacing
    elif (region := largest_tissue_region(info.regions)) is not None:
        box, spacing = region.box, region.spacing_mm or spacing
        views_left_out = len(tissue_regions(info.regions)) - 1
    else:
        box = detect_scan_region(list(state.greys))
        fallback = box == Box(0, 0, width, height)
    return replace(state, box=box, spacing=spacing, fallback=fallback, views_left_out=views_left_out)


def _text(job: ClipJob, state: ClipState) -> ClipState | Refused:
    text, why, read = _text_facts(job, state.info, state.decoded, state.box)
    if text.found and job.params.text == "exclude":
        return Refused(f"burned-in text found ({why}) and the recipe says exclude")
    masks = tuple(Box(*b) for b in text.boxes) if text.found and job.params.text == "mask" else ()
    return replace(state, text=text, masks=masks, read=read)


#: ingest, in order; each stage's failures are recorded under its name
STAGES: tuple[tuple[Stage, Step], ...] = (
    (Stage.PROBE, _probe),
    (Stage.SAMPLE, _sample),
    (Stage.DECODE, _decode),
    (Stage.CROP, _crop),
    (Stage.TEXT, _text),
)


def _frames_of(job: ClipJob) -> Failure | tuple[pa.Table, ClipFacts, tuple[str, ...]]:
    state = ClipState()
    for stage, step in STAGES:
        # the gate: the clip's problem comes back as a value, ours (disk, memory, a bug) stops the build
        result = _through_gate(job, step, state)
        if isinstance(result, MediaError):
            return _fail(job, stage, _reason(job, result))
        if isinstance(result, Refused):
            return _fail(job, stage, result.reason)
        state = result
    return _keep(job, state)


def _keep(job: ClipJob, state: ClipState) -> tuple[pa.Table, ClipFacts, tuple[str, ...]]:
    """The frames that are no near-duplicate of the last one kept, cropped, masked and encoded,
    and the clip's facts."""
    box, masks = state.box, list(state.masks)
    mask = (lambda a: text_check.mask_text(a, masks)) if masks else (lambda a: a)
    colour = bool(is_colour(list(state.decoded), box))
    rows: dict[str, list] = {name: [] for name in CLIP_SCHEMA.names}
    previous = None
    dropped = 0
    threshold, level = job.params.dedup, job.params.png_compress_level
    for frame, grey in zip(state.decoded, state.greys, strict=True):
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
        rows["thumb"].append(thumbnail(pixels).tobytes() if job.params.thumbnails else None)
        rows["width"].append(pixels.shape[1])
        rows["height"].append(pixels.shape[0])
    info = state.info
    facts = ClipFacts(
        info=ClipDescription(**{name: getattr(info, name) for name in ClipDescription.model_fields}),
        crop_box=tuple(box.as_list()),
        crop_fallback=state.fallback,
        colour=colour,
        spacing_mm=tuple(state.spacing) if state.spacing else None,
        text=state.text,
        n_duplicates_dropped=dropped,
        views_left_out=state.views_left_out,
        region_problems=tuple(info.region_problems),
        png_bytes=sum(len(b) for b in rows["png"]),
        rows=len(rows["png"]),
    )
    return pa.Table.from_pydict(rows, schema=CLIP_SCHEMA), facts, state.read


def _text_facts(job: ClipJob, info: ClipInfo, decoded: tuple[DecodedFrame, ...],
                box: Box) -> tuple[TextFacts, str, tuple[str, ...]]:
    """Burned-in text inside the crop, on the first, middle and last kept frames (and more,
    as `frames_to_check` says), why it counts as found, and the text read. Boxes are in the
    stored image's coordinates; the text read goes only to the local files beside the
    release, never into the release or its cache."""
    burned_in = info.burned_in
    if job.params.text == "off":  # no detector; the file's own word still counts, as a warning
        why = "the file declares Burned In Annotation = YES" if burned_in else ""
        return TextFacts(checked=False, found=burned_in, boxes=(), burned_in=burned_in,
                         action="warned" if burned_in else "none"), why, ()
    try:
        picks = text_check.frames_to_check(len(decoded))
        found = text_check.detect_text([decoded[i].to_rgb() if decoded[i].rgb is not None else decoded[i].grey
                                        for i in picks], box)
        checked = True
    except text_check.TextEngineMissing:
        if job.params.text != "warn":  # the plan refuses this up front; a worker without the extra is ours
            raise
        found, checked = [], False
    boxes = tuple((t.x - box.x, t.y - box.y, t.w, t.h) for t in found)
    why = [f"{len(boxes)} text box{'es' if len(boxes) != 1 else ''}"] if boxes else []
    if burned_in:
        why.append("the file declares Burned In Annotation = YES")
    # masked/warned: boxes found inside the crop; declared: the file says text is burned in, but
    # none lies inside the crop (cropping removed it); none: nothing found
    action = ("none" if not why else "declared" if not boxes and job.params.text == "mask"
              else "masked" if job.params.text == "mask" else "warned")
    return (TextFacts(checked=checked, found=bool(why), boxes=boxes, burned_in=burned_in, action=action),
            ", ".join(why), tuple(t.text for t in found))
