"""Prove that splits hold whole videos, find near-duplicate frames across splits or across
two releases, warn where the splits hold a class unevenly, and list the burned-in text the
build found."""
from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from ..contract.balance import class_balance
from ..contract.layout import LOCAL_TEXT, local_dir
from ..contract.lock import Lock
from ..files import atomic_write
from ..system import available_cores
from ..media import thumbnail
from ..media.neardup import (MAX_DIFFERENCE, MAX_DISTANCE, close_pairs, close_pairs_between, thumb_difference,
                             thumb_differences)
from .read import Release

T = TypeVar("T")


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
    grouped: bool = False  # the release was built with near-duplicate groups
    leaks: list[str] = field(default_factory=list)  # videos found in more than one split
    candidates: int = 0  # cross-split pairs whose hashes are close
    near_duplicates: list[NearDuplicate] = field(default_factory=list)  # confirmed on pixels

    @property
    def ok(self) -> bool:
        """No clip in two splits, and, where the recipe promised groups, no near-duplicate across splits."""
        return not self.leaks and not (self.grouped and self.near_duplicates)


def audit_release(release: Release, max_distance: int = MAX_DISTANCE, max_difference: float = MAX_DIFFERENCE) -> Audit:
    """Check split integrity from both tables, then list cross-split frame pairs whose
    perceptual hashes lie within `max_distance` bits and whose thumbnails differ by at
    most `max_difference` grey levels on average, closest first."""
    frames = release.frames(["frame_id", "video_id", "frame_index", "split", "phash"]).to_pandas()
    videos = release.videos(["video_id", "split"]).to_pandas()
    result = Audit(videos=videos["video_id"].nunique(), frames=len(frames),
                   grouped=release.lock.recipe.splits.near_duplicates)
    seen = frames.groupby("video_id")["split"].unique()
    declared = videos.groupby("video_id")["split"].unique()
    for video_id in sorted(set(seen.index) | set(declared.index)):
        splits = set(seen.get(video_id, [])) | set(declared.get(video_id, []))
        if len(splits) > 1:
            result.leaks.append(f"{video_id}: in splits {sorted(splits)}")
    pairs = list(close_pairs(frames["phash"].to_numpy(dtype=np.uint64), frames["split"].factorize()[0], max_distance))
    result.candidates = len(pairs)
    ids = frames["frame_id"].to_numpy()
    thumbs = _thumbnails(release, {int(ids[i]) for p in pairs for i in p[1:]})
    for dist, a, b in pairs:
        diff = thumb_difference(thumbs[int(ids[a])], thumbs[int(ids[b])])
        if diff <= max_difference:
            result.near_duplicates.append(NearDuplicate(dist, round(diff, 2), _ref(frames, a), _ref(frames, b)))
    result.near_duplicates.sort(key=lambda p: (p.difference, p.distance, p.a, p.b))
    return result


def _thumbnails(release: Release, wanted: set[int]) -> dict[int, np.ndarray]:
    """Thumbnails of the wanted frames (the build's `thumbnail` of the stored pixels)."""
    return stored_images(release, wanted, lambda _, png: _png_thumbnail(png))


def stored_images(release: Release, wanted: set[int], convert: Callable[[int, bytes], T]) -> dict[int, T]:
    """`convert(frame_id, png)` of the stored PNG bytes of each wanted frame, by frame_id, read one row group
    at a time and only from row groups whose frame_id range holds a wanted frame: memory holds
    one row group's images and what `convert` returns, not the shards' PNG bytes. PNG decoding
    (zlib, PIL) releases the GIL, so a row group's images are converted in threads."""
    out: dict[int, T] = {}
    ids = pa.array(sorted(wanted), pa.int64())
    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        for shard in release.shards("frames", present_only=True) if wanted else []:
            file = pq.ParquetFile(release.path(shard.path))
            meta = file.metadata
            column = next(c for c in range(meta.num_columns) if meta.schema.column(c).path == "frame_id")
            for k in range(file.num_row_groups):
                stats = meta.row_group(k).column(column).statistics
                if stats is not None and stats.has_min_max and not pc.any(
                        pc.and_(pc.greater_equal(ids, stats.min), pc.less_equal(ids, stats.max))).as_py():
                    continue
                part = file.read_row_group(k, columns=["frame_id", "image"], use_threads=False)  # less memory held
                part = part.filter(pc.is_in(part["frame_id"], value_set=ids))
                pngs = pc.struct_field(part["image"], "bytes").to_pylist()
                fids = part["frame_id"].to_pylist()
                out.update(zip(fids, pool.map(convert, fids, pngs), strict=True))
    return out


def _png_thumbnail(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return thumbnail(np.asarray(im))


def _ref(frames, row: int) -> tuple[str, int, str]:
    r = frames.iloc[row]
    return (r["video_id"], int(r["frame_index"]), r["split"])


# --- balance by class --------------------------------------------------------------


def balance_warnings(lock: Lock) -> list[str]:
    """A line per split that holds no video of a class, and per class spread over the splits
    wider than its largest group forces (`contract.balance` explains the bound). Clips of one
    group are one unit; a clip without a group is its own. A release that did not record its
    labels (format 1) gets a line saying its balance cannot be checked."""
    units: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (group or clip, split): videos per class
    for clip in lock.clips:
        if clip.label is None:
            return ["the lock records no labels (a release of us4 0.1.0): how evenly its splits hold each class "
                    "is not checked"]
        units[(clip.group or clip.video_id, clip.split)][f"{clip.source}/{clip.label}"] += 1
    lines = []
    for b in class_balance(((split, n) for (_, split), n in units.items()), lock.recipe.splits).values():
        lines += [b.empty_text(s) for s in b.empty]
        if b.too_wide:
            lines.append(b.spread_text())
    return lines


# --- across two releases ------------------------------------------------------------

_PAIRS_AT_ONCE = 1024  # candidate pairs whose thumbnails are compared in one array operation (4 MiB a side)


@dataclass
class CrossAudit:
    """Frames of one release that are identical to, or near-duplicates of, frames of another."""

    frames: tuple[int, int]  # frames of (release, other)
    videos: tuple[int, int]
    compared: int  # frame pairs whose hashes were compared: every frame of one against every frame of the other
    candidates: int  # pairs whose hashes lie within the distance: each checked on pixels
    found: int  # candidates confirmed on pixels, but for those with a blank frame
    identical: int  # of them, frames whose stored pixels hash alike
    blank: int  # confirmed pairs with a blank frame (one grey level): they share no image, so are not found
    shared_videos: tuple[int, int]  # videos of each release with at least one such frame
    pairs: list[NearDuplicate]  # the closest found pairs (a: this release, b: the other), at most `keep`

    @property
    def ok(self) -> bool:
        return self.found == 0


def audit_against(release: Release, other: Release, max_distance: int = MAX_DISTANCE,
                  max_difference: float = MAX_DIFFERENCE, keep: int = 100) -> CrossAudit:
    """Every frame of `release` against every frame of `other`, with the within-release audit's
    measure: difference hashes within `max_distance` bits are candidates, confirmed where their
    thumbnails differ by at most `max_difference` grey levels on average; a pair with a blank frame
    (a thumbnail of one grey level: the black first frame of many scanners' clips) is counted apart,
    as it shares no image. Hashes are compared
    block by block and thumbnails decoded for candidate frames only, so memory grows with the
    candidate pairs, not with the product of the releases' sizes. The closest `keep` pairs are listed."""
    columns = ["frame_id", "video_id", "frame_index", "split", "phash", "frame_sha256"]
    fa, fb = release.frames(columns).to_pandas(), other.frames(columns).to_pandas()
    dist, i, j = close_pairs_between(fa["phash"].to_numpy(dtype=np.uint64), fb["phash"].to_numpy(dtype=np.uint64),
                                     max_distance)
    ta, row_a = _thumb_stack(release, fa["frame_id"].to_numpy()[np.unique(i)])
    tb, row_b = _thumb_stack(other, fb["frame_id"].to_numpy()[np.unique(j)])
    ra = np.array([row_a[f] for f in fa["frame_id"].to_numpy()[i]], dtype=np.int64)
    rb = np.array([row_b[f] for f in fb["frame_id"].to_numpy()[j]], dtype=np.int64)
    diff = np.concatenate([np.zeros(0)] + [thumb_differences(ta[ra[k:k + _PAIRS_AT_ONCE]], tb[rb[k:k + _PAIRS_AT_ONCE]])
                                           for k in range(0, len(i), _PAIRS_AT_ONCE)])
    close, blank = diff <= max_difference, _blank(ta)[ra] | _blank(tb)[rb]
    hit = close & ~blank
    dist, i, j, diff = dist[hit], i[hit], j[hit], diff[hit]
    order = np.lexsort((j, i, dist, diff))[:keep]
    return CrossAudit(
        frames=(len(fa), len(fb)), videos=(fa["video_id"].nunique(), fb["video_id"].nunique()),
        compared=len(fa) * len(fb), candidates=int(hit.size), found=int(hit.sum()), blank=int((close & blank).sum()),
        identical=int((fa["frame_sha256"].to_numpy()[i] == fb["frame_sha256"].to_numpy()[j]).sum()),
        shared_videos=(fa["video_id"].iloc[i].nunique(), fb["video_id"].iloc[j].nunique()),
        pairs=[NearDuplicate(int(dist[k]), round(float(diff[k]), 2), _ref(fa, i[k]), _ref(fb, j[k])) for k in order])


def _thumb_stack(release: Release, frame_ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """(thumbnails of some frames stacked, row of each frame_id in the stack)."""
    thumbs = _thumbnails(release, {int(f) for f in frame_ids})
    row = {fid: n for n, fid in enumerate(thumbs)}
    return (np.stack(list(thumbs.values())) if thumbs else np.zeros((0, 1, 1), np.uint8)), row


def _blank(thumbs: np.ndarray) -> np.ndarray:
    """Per thumbnail of a stack: it holds one grey level."""
    return thumbs.min(axis=(1, 2)) == thumbs.max(axis=(1, 2))


# --- burned-in text ----------------------------------------------------------------


@dataclass(frozen=True)
class TextFinding:
    video_id: str
    action: str  # masked, warned, declared (the file declares burned-in text; none inside the crop)
    boxes: list[list[int]]  # x, y, w, h in the stored image
    read: list[str] | None  # the text read: only on the machine that built the release
    thumbnail: str | None  # file of the report, when one was written


def text_findings(release: Release, report: Path | None = None) -> list[TextFinding]:
    """Each clip in which the build found burned-in text: its boxes and the action taken
    (from the videos table), the text read (from the build machine's local report, when
    this is that machine), and with `report` a thumbnail of its middle frame with the
    boxes drawn (PNG files in that folder)."""
    videos = release.videos(["video_id", "text_boxes", "text_action", "frame_ids"]).to_pylist()
    local = local_dir(release.root) / LOCAL_TEXT
    read = json.loads(local.read_text()) if local.is_file() else None
    flagged = [v for v in videos if v["text_action"] in ("masked", "warned", "declared")]
    images = release.images(v["frame_ids"][len(v["frame_ids"]) // 2] for v in flagged if v["frame_ids"]) \
        if report is not None else {}
    out = []
    for n, v in enumerate(flagged):
        thumb = None
        if report is not None and v["frame_ids"]:
            thumb = f"text-{n:04d}.png"
            report.mkdir(parents=True, exist_ok=True)
            atomic_write(report / thumb, _boxed(images[v["frame_ids"][len(v["frame_ids"]) // 2]], v["text_boxes"]))
        out.append(TextFinding(v["video_id"], v["text_action"], v["text_boxes"],
                               read.get(v["video_id"]) if read is not None else None, thumb))
    return out


def _boxed(png: bytes, boxes: list[list[int]], size: int = 256) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        img = im.convert("RGB")
    draw = ImageDraw.Draw(img)
    for x, y, w, h in boxes:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0), width=2)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
