"""What changed between two releases: clips and frames added and removed, labels changed,
clips that moved between splits, and the sources whose recipe changed.

Read from the two locks alone (a lock lists every clip with its label, split and the
pixel hash of each frame), so either side may be a release folder, a lock or manifest
file, or a Hub revision of which only the lock is fetched. Clips are matched by
`video_id`, frames by (video_id, frame_index); a frame kept by both whose pixels differ
(`frame_sha256`, e.g. after a crop change) counts as changed. Locks of format 1 record
no labels: for them the labels come from the release's `videos` table where it is at hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..contract.lock import Lock

# recipe keys that shape every source's frames, as opposed to `sources.NAME`
_SHARED_RECIPE_KEYS = ("seed", "dedup", "splits", "output")


@dataclass(frozen=True)
class ClipRef:
    video_id: str
    label: str | None
    split: str
    frames: int


@dataclass
class ReleaseDiff:
    old: str
    new: str
    clips_added: list[ClipRef] = field(default_factory=list)
    clips_removed: list[ClipRef] = field(default_factory=list)
    clips_replaced: list[str] = field(default_factory=list)  # same video_id, another file
    frames_added: int = 0
    frames_removed: int = 0
    frames_changed: int = 0  # same clip and index, other pixels
    labels_changed: list[tuple[str, str, str]] = field(default_factory=list)  # video_id, old, new
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # video_id, old split, new split
    pixels: list[tuple[str, int, int]] = field(default_factory=list)  # video_id, frames differing, frames in old
    recipes_changed: dict[str, list[str]] = field(default_factory=dict)  # source -> what changed
    recipe_shared_changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.clips_added or self.clips_removed or self.clips_replaced or self.frames_added
                    or self.frames_removed or self.frames_changed or self.labels_changed
                    or self.moved or self.recipes_changed or self.recipe_shared_changed)

    def lines(self) -> list[str]:
        out = [f"{self.old} -> {self.new}"]
        out += [f"note: {n}" for n in self.notes]
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
        out.append(f"clips that moved between splits: {len(self.moved)}")
        out += [f"  {v}: {a} -> {b}" for v, a, b in self.moved]
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
            "moved_between_splits": [list(t) for t in self.moved],
            "recipes_changed": self.recipes_changed,
            "recipe_shared_changed": self.recipe_shared_changed,
            "notes": self.notes,
        }


def diff_locks(old: Lock, new: Lock, labels: tuple[dict[str, str], dict[str, str]] = ({}, {})) -> ReleaseDiff:
    """The differences from `old` to `new`. `labels` supplies {video_id: label} for locks
    that record none (format 1), read from their releases' videos tables."""
    a, b = _clips(old, labels[0]), _clips(new, labels[1])
    result = ReleaseDiff(f"{old.name} {old.version}", f"{new.name} {new.version}")
    result.clips_added = [b[v][0] for v in sorted(set(b) - set(a))]
    result.clips_removed = [a[v][0] for v in sorted(set(a) - set(b))]
    result.frames_added = sum(len(b[c.video_id][1]) for c in result.clips_added)
    result.frames_removed = sum(len(a[c.video_id][1]) for c in result.clips_removed)
    for v in sorted(set(a) & set(b)):
        (ca, frames_a, sha_a), (cb, frames_b, sha_b) = a[v], b[v]
        if sha_a != sha_b:
            result.clips_replaced.append(v)
        if ca.label != cb.label and None not in (ca.label, cb.label):
            result.labels_changed.append((v, ca.label, cb.label))
        if ca.split != cb.split:
            result.moved.append((v, ca.split, cb.split))
        added, removed = len(frames_b.keys() - frames_a.keys()), len(frames_a.keys() - frames_b.keys())
        changed = sum(frames_a[i] != frames_b[i] for i in frames_a.keys() & frames_b.keys())
        result.frames_added += added
        result.frames_removed += removed
        result.frames_changed += changed
        if added or removed or changed:  # per clip, for a rebuild's report
            result.pixels.append((v, added + removed + changed, len(frames_a)))
    if any(c.label is None for c, _, _ in [*a.values(), *b.values()]):
        result.notes.append("a side records no labels (a format-1 lock without its videos table): labels not compared")
    # every default stated on both sides: a key added since the older lock was written is no change
    for source in sorted(set(old.recipe.sources) | set(new.recipe.sources)):
        sa, sb = (r.sources[source].to_dict() if source in r.sources else None for r in (old.recipe, new.recipe))
        if sa is None or sb is None:
            result.recipes_changed[source] = ["source added" if sa is None else "source removed"]
        elif sa != sb:
            result.recipes_changed[source] = [f"{k}: {sa.get(k)} -> {sb.get(k)}"
                                              for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    ra, rb = old.recipe.to_dict(), new.recipe.to_dict()
    result.recipe_shared_changed = [f"{k}: {ra.get(k)} -> {rb.get(k)}"
                                    for k in _SHARED_RECIPE_KEYS if ra.get(k) != rb.get(k)]
    return result


def _clips(lock: Lock, labels: dict[str, str]) -> dict[str, tuple[ClipRef, dict[int, str], str]]:
    return {c.video_id: (ClipRef(c.video_id, c.label if c.label is not None else labels.get(c.video_id), c.split,
                                 len(c.frame_index)),
                         dict(zip(c.frame_index, c.frame_sha256)), c.sha256) for c in lock.clips}
