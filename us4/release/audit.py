"""Prove that splits hold whole videos, find near-duplicate frames across splits, warn where
the splits hold a class unevenly, and list the burned-in text the build found."""
from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..contract.balance import class_balance
from ..contract.lock import Lock
from ..files import atomic_write
from ..media import thumbnail
from ..media.neardup import MAX_DIFFERENCE, MAX_DISTANCE, close_pairs, thumb_difference
from .read import LOCAL_TEXT, Release, local_dir



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
                   grouped=release.lock.recipe["splits"].get("group") == "near_duplicates")
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
    out = {}
    for fid, png in release.images(wanted).items():
        with Image.open(io.BytesIO(png)) as im:
            out[fid] = thumbnail(np.asarray(im))
    return out


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
    for b in class_balance(((split, n) for (_, split), n in units.items()), lock.recipe["splits"]).values():
        lines += [b.empty_text(s) for s in b.empty]
        if b.too_wide:
            lines.append(b.spread_text())
    return lines


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
