"""The rows of a release's tables against its lock's clips.

A shard's sha256 only proves the file is the one the lock names; whoever rewrites a shard
can write its new hash into the lock too. What the lock says of each clip (id, label,
split, fold, group, frame list, pixel hashes, where its rows lie, the recipe's facts of
it) is what diff, the card,
the benchmark and a manifest comparison read, so every row must say the same, and every
clip must have its rows. The check reads only the small columns (never the image bytes);
`deep` also decodes every stored PNG and hashes its pixels as the build did, so a claim
about pixels rests on pixels, not on the lock's own word.
"""
from __future__ import annotations

import io
import os
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..contract.lock import FORMAT_V1, LOCK_NAME, Clip, Lock, Shard
from ..contract.schema import release_schemas
from ..media.pixels import pixel_sha256
from .read import Release

FRAME_COLUMNS = ("video_id", "frame_id", "frame_index", "frame_sha256", "source", "label", "label_id", "us4_label",
                 "split", "fold", "group", "clip_sha256")
VIDEO_COLUMNS = ("video_id", "source", "label", "label_id", "us4_label", "split", "fold", "group", "clip_sha256",
                 "n_kept", "frame_ids", "frame_indices", "text_action", "licence")
#: columns us4 0.1.0 (format 1) never wrote
V1_ABSENT = frozenset({"group", "text_action"})
#: what a format-1 lock does not record (labels, class ids), or records only as its split's name (fold)
V1_UNRECORDED = frozenset({"label", "label_id", "us4_label", "fold", "group", "text_action"})
#: rows decoded at once by the deep check: memory stays one batch of images whatever the release's size
BATCH_ROWS = 64
#: the most pixels a stored frame may have for the deep check to decode it (a hostile PNG header
#: can announce any size; us4's own frames are cropped video frames, far below this)
MAX_PIXELS = 2**26


class _Nothing:
    """An expected value the lock cannot give: equal to no value a shard holds."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return self.why


#: what the lock expects on a row it places no clip on
NO_CLIP = _Nothing("no clip")
#: the class ids of a label that is not a class of its source in the lock's recipe
NO_CLASS = _Nothing("no class of that name in its recipe")


class _Findings:
    """Findings of one kind are one line: the first, and how many there are (a hostile shard
    of a million bad rows gives a few lines, not a million)."""

    def __init__(self) -> None:
        self.found: dict[str, list] = {}  # what the rows have -> [first line, how many]

    def note(self, what: str, line: str) -> None:
        self.found.setdefault(what, [line, 0])[1] += 1

    def lines(self) -> list[str]:
        return [line + (f"; {n} {what}" if n > 1 else "") for what, (line, n) in self.found.items()]


@dataclass
class RowCheck:
    """What the rows say against the lock: problems, and with `deep` the frames decoded."""

    problems: list[str] = field(default_factory=list)
    frames_decoded: int = 0
    #: kept when asked: the pixel hash decoded from each stored frame, by the row's own video_id and frame_index
    pixels: dict[str, dict[int, str]] | None = None


def check_rows(release: Release, intact: Collection[int], *, deep: bool = False, keep: bool = False) -> RowCheck:
    """Compare the rows of the shards `intact` (indices into the lock's shards, files whose
    bytes matched) with the lock's clips; with `deep`, re-hash every frame's pixels (and with
    `keep`, return each hash: otherwise memory stays one batch of frames)."""
    lock = release.lock
    out = RowCheck(pixels={} if deep and keep else None)
    expect = _Expected(lock)
    for index in sorted(intact):
        shard = lock.shards[index]
        if shard.config == "frames":
            out.problems += _frames_shard(release, index, expect, out if deep else None)
        else:
            out.problems += _videos_shard(release, shard, expect)
    out.problems += lock_problems(lock)
    return out


def lock_problems(lock: Lock) -> list[str]:
    """What a lock says of itself that cannot all be true: a clip listed twice, a clip in a
    shard of another split or source, frame ids that overlap or leave gaps, counts that are
    not the clips'."""
    out: list[str] = []
    v1 = lock.source_format == FORMAT_V1
    seen: set[str] = set()
    for clip in lock.clips:
        if clip.video_id in seen:
            out.append(f"clip {_show(clip.video_id)}: listed twice in {LOCK_NAME}")
        seen.add(clip.video_id)
        shard = lock.shards[clip.shard]
        if clip.split != shard.split or (not v1 and clip.source != shard.source):
            out.append(f"clip {_show(clip.video_id)}: {clip.source} {clip.split} in {LOCK_NAME}, but its frames "
                       f"shard {shard.path} is of {shard.source} {shard.split}")
    following = 0
    for clip in sorted(lock.clips, key=lambda c: c.frame_id):
        if clip.frame_id != following:
            out.append(f"clip {_show(clip.video_id)}: its frame ids start at {clip.frame_id} in {LOCK_NAME}, "
                       f"where {following} was next (frame ids overlap or leave a gap)")
            break
        following += len(clip.frame_index)
    frames = sum(len(c.frame_index) for c in lock.clips)
    if (lock.counts.videos, lock.counts.frames) != (len(lock.clips), frames):
        out.append(f"{LOCK_NAME}: counts say {lock.counts.videos} videos and {lock.counts.frames} frames; "
                   f"its clips are {len(lock.clips)} with {frames} frames")
    if not v1:  # format 1 recorded no label per clip, so its tally cannot be redone
        tally: dict[str, dict[str, list[int]]] = {}
        for clip in lock.clips:
            n = tally.setdefault(clip.split, {}).setdefault(f"{clip.source}/{clip.label}", [0, 0])
            n[0] += 1
            n[1] += len(clip.frame_index)
        recorded = {split: {k: [t.videos, t.frames] for k, t in labels.items()}
                    for split, labels in lock.counts.by_split_label.items()}
        if recorded != tally:
            out.append(f"{LOCK_NAME}: counts.by_split_label is not the tally of its clips")
    return out


class _Expected:
    """What the lock says each row of a clip holds."""

    def __init__(self, lock: Lock):
        self.v1 = lock.source_format == FORMAT_V1
        self.clips: dict[str, Clip] = {}
        self.by_shard: dict[int, list[Clip]] = {}
        for clip in lock.clips:
            self.clips.setdefault(clip.video_id, clip)
            self.by_shard.setdefault(clip.shard, []).append(clip)
        self.classes = {} if self.v1 else _class_ids(lock)
        fields = lock.fact_fields()
        self.schemas = release_schemas(fields)
        self.facts = tuple(name for name, _ in fields)  # the videos table's fact columns

    def recorded(self, columns: Collection[str]) -> list[str]:
        return [c for c in columns if not (self.v1 and c in V1_UNRECORDED)]

    def per_clip(self, clip: Clip) -> dict[str, Any]:
        """The values every row of the clip carries, in both tables."""
        values = {"video_id": clip.video_id, "source": clip.source, "split": clip.split, "clip_sha256": clip.sha256}
        if clip.licence is not None:
            values["licence"] = clip.licence
        if not self.v1:
            label_id, us4_label = self.classes.get((clip.source, clip.label), (NO_CLASS, NO_CLASS))
            values.update(label=clip.label, label_id=label_id, us4_label=us4_label, fold=clip.fold, group=clip.group)
        return values


def _class_ids(lock: Lock) -> dict[tuple[str, str], tuple[int, int | None]]:
    """(source, class) -> (label_id, us4_label) as the lock's recipe defines them (what the build wrote)."""
    return {(name, cls.name): (spec.definition.label_id(cls), cls.us4_head)
            for name, spec in lock.recipe.sources.items() for cls in spec.definition.classes}


def _read(release: Release, shard: Shard, columns: tuple[str, ...], expect: _Expected,
          also: tuple[str, ...] = ()) -> tuple[dict[str, list], list[str]]:
    """The small columns of a shard as Python lists; problems if a column the lock needs (or one
    of `also`, checked but not read) is absent or not of the contract's type."""
    file = pq.ParquetFile(release.path(shard.path))
    names = set(file.schema_arrow.names)
    absent = [c for c in columns + also if c not in names and not (expect.v1 and c in V1_ABSENT)]
    if absent:
        why = ("a fact column of its lock's recipe" if any(c in expect.facts for c in absent) else
               f"which every us4 release's {shard.config} has")
        return {}, [f"{shard.path}: no column {', '.join(absent)}, {why}"]
    present = [c for c in columns if c in names]
    contract = expect.schemas[shard.config]
    for c in present + list(also):  # another type: its values are not what the lock is compared with
        if file.schema_arrow.field(c).type != contract.field(c).type:
            return {}, [f"{shard.path}: column {c} is {file.schema_arrow.field(c).type}, not {contract.field(c).type}"]
    try:
        table = file.read(columns=present)
    except (OSError, pa.ArrowException) as exc:  # a page that does not decode, under a footer that does
        return {}, [_unreadable(shard, exc)]
    return {c: table.column(c).to_pylist() for c in table.column_names}, []


def _unreadable(shard: Shard, exc: Exception) -> str:
    return f"{shard.path}: unreadable Parquet ({_show(str(exc).strip().splitlines()[0] if str(exc).strip() else exc)})"


def _frames_shard(release: Release, index: int, expect: _Expected, deep: RowCheck | None) -> list[str]:
    shard = release.lock.shards[index]
    actual, problems = _read(release, shard, FRAME_COLUMNS, expect, ("image",) if deep else ())
    if problems:
        return problems
    n = len(actual["video_id"])
    have = set(actual["video_id"])
    # rows the lock places no clip on expect "no clip"; every other value of theirs is then not compared
    columns = expect.recorded([c for c in FRAME_COLUMNS if c in actual])
    wanted = {c: list(actual[c]) for c in columns}
    wanted["video_id"] = [NO_CLIP] * n
    for clip in expect.by_shard.get(index, []):
        if clip.video_id not in have:
            problems.append(f"clip {_show(clip.video_id)}: in {LOCK_NAME}, no row in {shard.path}")
            continue
        k = len(clip.frame_index)
        if clip.row + k > n:
            problems.append(f"clip {_show(clip.video_id)}: {LOCK_NAME} places its {k} frames from row {clip.row} "
                            f"of {shard.path}, which has {n} rows")
            continue
        rows = slice(clip.row, clip.row + k)
        for column, value in expect.per_clip(clip).items():
            if column in wanted:
                wanted[column][rows] = [value] * k
        wanted["frame_id"][rows] = range(clip.frame_id, clip.frame_id + k)
        wanted["frame_index"][rows] = clip.frame_index
        wanted["frame_sha256"][rows] = clip.frame_sha256
    problems += _compare(shard.path, actual, wanted, wanted["video_id"])
    if deep is not None:
        problems += _pixels(release, shard, actual, wanted, deep)
    return problems


def _videos_shard(release: Release, shard: Shard, expect: _Expected) -> list[str]:
    actual, problems = _read(release, shard, VIDEO_COLUMNS + expect.facts, expect)
    if problems:
        return problems
    # format 1 put every source of a split in one videos shard
    mine = {c.video_id: c for c in expect.clips.values()
            if c.split == shard.split and (expect.v1 or c.source == shard.source)}
    columns = expect.recorded([c for c in VIDEO_COLUMNS + expect.facts if c in actual])
    wanted = {c: list(actual[c]) for c in columns}  # rows of no clip of this shard: reported once, not compared
    clip_of_row: list[Any] = [NO_CLIP] * len(actual["video_id"])
    seen: set[str] = set()
    stray = _Findings()
    for row, video_id in enumerate(actual["video_id"]):
        clip = mine.get(video_id)
        if clip is None or video_id in seen:
            where = (f"a second row of clip {_show(video_id)}" if clip is not None else
                     f"{LOCK_NAME} puts it in {expect.clips[video_id].source} {expect.clips[video_id].split}"
                     if video_id in expect.clips else f"a clip {LOCK_NAME} does not name")
            stray.note("rows of no clip of this shard", f"{shard.path} row {row}: video_id {_show(video_id)}: {where}")
            continue
        seen.add(video_id)
        clip_of_row[row] = video_id
        k = len(clip.frame_index)
        values = {**expect.per_clip(clip), "n_kept": k, "frame_ids": list(range(clip.frame_id, clip.frame_id + k)),
                  "frame_indices": list(clip.frame_index)}
        if clip.text is not None:
            values["text_action"] = clip.text
        values.update({name: clip.facts.get(name) for name in expect.facts})  # another source's fact: null
        for column, value in values.items():
            if column in wanted:
                wanted[column][row] = value
    problems += stray.lines()
    problems += [f"clip {_show(v)}: in {LOCK_NAME}, no row in {shard.path}" for v in sorted(set(mine) - seen)]
    return problems + _compare(shard.path, actual, wanted, clip_of_row)


def _compare(path: str, actual: dict[str, list], wanted: dict[str, list], clip_of_row: list[Any]) -> list[str]:
    """One line per column that differs: its first differing row, and how many rows differ. A row
    holding another clip than the lock places there is named by its video_id alone."""
    found = []
    elsewhere: set[int] = set()
    for order, (column, want) in enumerate(wanted.items()):  # video_id first
        have = actual[column]
        if have == want:
            continue
        bad = [r for r, (a, e) in enumerate(zip(have, want, strict=True)) if a != e and r not in elsewhere]
        if column == "video_id":
            elsewhere.update(bad)
        if bad:
            found.append((bad[0], order, column, len(bad)))
    lines = []
    for row, _, column, count in sorted(found):
        a, e = actual[column][row], wanted[column][row]
        clip = "" if column == "video_id" else f" (clip {_show(clip_of_row[row])})"
        more = f"; {count} rows differ in {column}" if count > 1 else ""
        lines.append(f"{path} row {row}: {column} {_show(a)}, the lock says {_show(e)}{clip}{more}")
    return lines


def _pixels(release: Release, shard: Shard, actual: dict[str, list], wanted: dict[str, list],
            out: RowCheck) -> list[str]:
    """Decode every stored frame of a shard, hash its pixels as the build did, compare with the lock."""
    found = _Findings()
    row = 0
    batches = pq.ParquetFile(release.path(shard.path)).iter_batches(batch_size=BATCH_ROWS, columns=["image"])
    # PIL decodes with the GIL released: threads share the work and memory stays one batch of frames
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for batch in _guarded(batches, shard, found):
            for digest in pool.map(_pixel_hash, batch.column(0).field("bytes").to_pylist()):
                if isinstance(digest, ValueError):
                    found.note("frames have an image that cannot be hashed",
                               f"{shard.path} row {row}: the image {digest}")
                else:
                    out.frames_decoded += 1
                    if out.pixels is not None:
                        out.pixels.setdefault(actual["video_id"][row], {})[actual["frame_index"][row]] = digest
                    if digest != wanted["frame_sha256"][row]:
                        found.note("frames differ in pixels",
                             f"{shard.path} row {row}: its pixels hash to {digest[:12]}…, the lock says "
                             f"{_show(wanted['frame_sha256'][row])[:12]}… (clip {_show(wanted['video_id'][row])}, "
                             f"frame {actual['frame_index'][row]})")
                row += 1
    return found.lines()


def _guarded(batches: Iterator[pa.RecordBatch], shard: Shard, found: _Findings) -> Iterator[pa.RecordBatch]:
    """The batches, until one does not decode: that ends the shard with a finding."""
    try:
        yield from batches
    except (OSError, pa.ArrowException) as exc:
        found.note("", _unreadable(shard, exc))


def _pixel_hash(png: bytes | None) -> str | ValueError:
    """The pixel hash of a stored PNG, or what makes it unfit to hash (returned: it is a finding)."""
    from PIL import Image, UnidentifiedImageError

    if not png:
        return ValueError("is empty")
    try:
        with Image.open(io.BytesIO(png)) as img:
            if img.format != "PNG" or img.mode not in ("L", "RGB"):
                return ValueError(f"is not an 8-bit grey or RGB PNG ({img.format} {img.mode})")
            if img.width * img.height > MAX_PIXELS:
                return ValueError(f"announces {img.width}x{img.height} pixels, more than a frame may have")
            return pixel_sha256(np.asarray(img))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:  # PIL: bytes that do not decode
        return ValueError(f"does not decode ({type(exc).__name__}: {exc})")


def _show(value: Any) -> str:
    """A value from a shard or a lock, as one bounded printable token."""
    if value is None:
        return "null"
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
