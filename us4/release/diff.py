"""What changed between two releases: clips and frames added and removed, labels and
splits changed, and the sources whose recipe changed.

Clips are matched by `video_id` (source + path), frames by (video_id, frame_index); a
frame kept by both whose pixels differ (`frame_sha256`, e.g. after a crop change) counts
as changed. Only the lock and the small `videos` table are read, never the images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .read import Release

_VIDEO_COLUMNS = ["video_id", "label", "split", "clip_sha256", "frame_ids", "frame_indices"]
# recipe keys that shape every source's frames, as opposed to `sources.NAME`
_SHARED_RECIPE_KEYS = ("seed", "dedup", "splits", "output")


@dataclass(frozen=True)
class Clip:
    video_id: str
    label: str
    split: str
    frames: int


@dataclass
class ReleaseDiff:
    old: str
    new: str
    clips_added: list[Clip] = field(default_factory=list)
    clips_removed: list[Clip] = field(default_factory=list)
    clips_replaced: list[str] = field(default_factory=list)  # same video_id, another file
    frames_added: int = 0
    frames_removed: int = 0
    frames_changed: int = 0  # same clip and index, other pixels
    labels_changed: list[tuple[str, str, str]] = field(default_factory=list)  # video_id, old, new
    splits_changed: list[tuple[str, str, str]] = field(default_factory=list)
    recipes_changed: dict[str, list[str]] = field(default_factory=dict)  # source -> what changed
    recipe_shared_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.clips_added or self.clips_removed or self.clips_replaced or self.frames_added
                    or self.frames_removed or self.frames_changed or self.labels_changed
                    or self.splits_changed or self.recipes_changed or self.recipe_shared_changed)

    def lines(self) -> list[str]:
        out = [f"{self.old} -> {self.new}"]
        if self.empty:
            return out + ["no differences in clips, frames, labels, splits or recipe"]
        out.append(f"clips: {len(self.clips_added)} added, {len(self.clips_removed)} removed, "
                   f"{len(self.clips_replaced)} replaced by another file")
        out += [f"  + {c.video_id} ({c.label}, {c.split}, {c.frames} frames)" for c in self.clips_added]
        out += [f"  - {c.video_id} ({c.label}, {c.split}, {c.frames} frames)" for c in self.clips_removed]
        out += [f"  ~ {v}" for v in self.clips_replaced]
        out.append(f"frames: {self.frames_added} added, {self.frames_removed} removed, "
                   f"{self.frames_changed} with other pixels")
        out.append(f"labels changed: {len(self.labels_changed)}")
        out += [f"  {v}: {a} -> {b}" for v, a, b in self.labels_changed]
        out.append(f"splits changed: {len(self.splits_changed)}")
        out += [f"  {v}: {a} -> {b}" for v, a, b in self.splits_changed]
        out.append(f"sources whose recipe changed: {', '.join(self.recipes_changed) or 'none'}")
        out += [f"  {s}: {what}" for s, whats in self.recipes_changed.items() for what in whats]
        out += [f"  all sources: {what}" for what in self.recipe_shared_changed]
        return out

    def to_dict(self) -> dict:
        return {
            "old": self.old, "new": self.new,
            "clips_added": [c.__dict__ for c in self.clips_added],
            "clips_removed": [c.__dict__ for c in self.clips_removed],
            "clips_replaced": self.clips_replaced,
            "frames_added": self.frames_added, "frames_removed": self.frames_removed,
            "frames_changed": self.frames_changed,
            "labels_changed": [list(t) for t in self.labels_changed],
            "splits_changed": [list(t) for t in self.splits_changed],
            "recipes_changed": self.recipes_changed,
            "recipe_shared_changed": self.recipe_shared_changed,
        }


def diff_releases(old: Release, new: Release) -> ReleaseDiff:
    a, b = _clips(old), _clips(new)
    result = ReleaseDiff(f"{old.name} {old.version}", f"{new.name} {new.version}")
    result.clips_added = [_clip(b[v]) for v in sorted(set(b) - set(a))]
    result.clips_removed = [_clip(a[v]) for v in sorted(set(a) - set(b))]
    fa, fb = _frames(old, a), _frames(new, b)
    result.frames_added = len(set(fb) - set(fa))
    result.frames_removed = len(set(fa) - set(fb))
    result.frames_changed = sum(1 for k in set(fa) & set(fb) if fa[k] != fb[k])
    for v in sorted(set(a) & set(b)):
        if a[v]["clip_sha256"] != b[v]["clip_sha256"]:
            result.clips_replaced.append(v)
        if a[v]["label"] != b[v]["label"]:
            result.labels_changed.append((v, a[v]["label"], b[v]["label"]))
        if a[v]["split"] != b[v]["split"]:
            result.splits_changed.append((v, a[v]["split"], b[v]["split"]))
    ra, rb = old.lock["recipe"], new.lock["recipe"]
    for source in sorted(set(ra["sources"]) | set(rb["sources"])):
        sa, sb = ra["sources"].get(source), rb["sources"].get(source)
        if sa is None or sb is None:
            result.recipes_changed[source] = ["source added" if sa is None else "source removed"]
        elif sa != sb:
            result.recipes_changed[source] = [f"{k}: {sa.get(k)} -> {sb.get(k)}"
                                              for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    result.recipe_shared_changed = [f"{k}: {ra.get(k)} -> {rb.get(k)}"
                                    for k in _SHARED_RECIPE_KEYS if ra.get(k) != rb.get(k)]
    return result


def _clips(release: Release) -> dict[str, dict]:
    return {row["video_id"]: row for row in release.videos(_VIDEO_COLUMNS).to_pylist()}


def _clip(row: dict) -> Clip:
    return Clip(row["video_id"], row["label"], row["split"], len(row["frame_ids"]))


def _frames(release: Release, clips: dict[str, dict]) -> dict[tuple[str, int], str]:
    """(video_id, frame_index) -> frame_sha256, through the lock's per-frame lineage."""
    pixels = release.lock["lineage"]["frame_sha256"]
    return {(v, index): pixels[fid] for v, row in clips.items()
            for fid, index in zip(row["frame_ids"], row["frame_indices"], strict=True)}
