"""The lock (`release.json`) as a typed model, validated when it is read.

Pydantic models (strict types, unknown fields refused) rather than a dict read by
string keys: a lock is a promise to people we will never meet, so a missing or
misspelt field, a wrong type, a path that climbs out of the release or a format
from a newer us4 is one clear error at the door, not a KeyError deep inside.

Format 3 is what this us4 writes. Format 2 (us4 0.2.0) is read as format 3 without
what it never recorded (the sheets and each clip's facts: empty), and written back as format 2 (an attachment
changes no byte of its data). Format 1 (us4 0.1.0) is still read: it is validated as
written and upgraded in memory (fields it never recorded are None), and `Lock.sha256`
stays the hash of the file as it was published.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr,
                      ValidationError, model_validator)

from ..errors import RecipeError, ReleaseError
from ..hashing import sha256_json
from ..paths import safe_name, safe_relpath
from ..recipe import Recipe, parse_recipe
from .schema import fold_of

FORMAT = "us4-release/3"
FORMAT_V2 = "us4-release/2"
FORMAT_V1 = "us4-release/1"
READABLE = (FORMAT_V1, FORMAT_V2, FORMAT)
#: what format 3 added, by where it lies: absent from a format-2 lock, and left out when one is written back
_SINCE_V3 = {"lock": {"sheets": []}, "clip": {"facts": {}, "licence": None}}  # each with its value in a format-2 lock

LOCK_NAME = "release.json"
# Bounds checked before a lock is parsed into the model. A lock states every frame's index and
# sha256 (78 bytes a frame as written: 1095 frames take 85 KB of POCUS 1.1.0's 137 KB) and each
# clip's other fields (about 370 bytes): a corpus of 1M frames in 50,000 clips makes some
# 80 + 19 = 100 MB. 512 MiB is five times that. The deepest value of a lock is a crop box of the
# recipe it holds, 7 levels down (the recipe parser allows its own values 12 levels).
MAX_LOCK_BYTES = 512 << 20
MAX_LOCK_DEPTH = 16
CARD_NAME = "README.md"
CROISSANT_NAME = "croissant.json"
#: Files generated from the lock, recorded in it with a format number and their sha256.
GENERATED = (CARD_NAME, CROISSANT_NAME)

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
RelPath = Annotated[str, AfterValidator(safe_relpath)]
Name = Annotated[str, AfterValidator(safe_name)]
Count = Annotated[int, Field(ge=0)]


def _typed_recipe(value: Any) -> Recipe:
    """A lock's recipe, checked as a recipe file is (every key, type and bound), kept as recorded."""
    if isinstance(value, Recipe):
        return value
    try:
        return parse_recipe(value, where="recipe", recorded=True)
    except RecipeError as exc:
        raise ValueError(str(exc)) from None  # "recipe: KEY: what is wrong"


#: the typed recipe, written as the lock recorded it (`Recipe.as_recorded`)
LockRecipe = Annotated[Recipe, PlainValidator(_typed_recipe), PlainSerializer(Recipe.as_recorded, return_type=dict)]


class LockError(ReleaseError):
    """A lock is unreadable, malformed, or of a format this us4 cannot read."""


class Stage(StrEnum):
    """Where a clip failed: the stages of planning and ingest that exist."""

    PLAN = "plan"  # listing and labelling: no readable label (identical content is left out, not failed)
    PROBE = "probe"  # the file cannot be opened or described
    SAMPLE = "sample"  # the sampling policy keeps no frame
    DECODE = "decode"  # a wanted frame does not decode (truncated, corrupt, unsupported)
    CROP = "crop"  # the recipe's crop does not fit the frame
    TEXT = "text"  # burned-in text found and the recipe says exclude


class WarningKind(StrEnum):
    """Fallbacks a build took that a reader should know about."""

    CROP_FALLBACK = "crop_fallback"  # no scan region found: the full frame is kept
    SHEET_MISSING = "sheet_missing"  # a source's metadata sheet is absent: labels from file names
    UNKNOWN_CLIP = "unknown_clip"  # the recipe names a clip (a crop override) that is not there
    EMPTY_SOURCE = "empty_source"  # a source with no usable clip, allowed by --allow-empty
    TEXT_FOUND = "text_found"  # burned-in text found and the recipe says warn
    SPLIT_MOVED = "split_moved"  # a clip could not keep its previous split (its group spans two, or balance)
    VIEW_LEFT_OUT = "view_left_out"  # a DICOM file of several views kept its largest (regions: largest)
    REGION_LEFT_OUT = "region_left_out"  # a DICOM ultrasound region inverted or beyond the frame: not used
    PREVIOUS_OTHER_RECIPE = "previous_other_recipe"  # splits inherited from a release of another recipe name
    FACTS_MISSING = "facts_missing"  # clips the recipe's facts sheet has no row for: their facts are null


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Shard(_Strict):
    path: RelPath
    config: Literal["frames", "videos"]
    source: Name
    split: Name
    rows: Count
    bytes: Count
    sha256: Sha256


class Clip(_Strict):
    """A built clip: what a rebuild must reproduce, readable without the frame shards."""

    video_id: str
    source: str
    sha256: Sha256
    bytes: Count | None  # None: upgraded from format 1 without an input entry
    label: str | None  # None only when upgraded from format 1, which did not record it
    split: Name
    fold: int | None
    group: str | None
    shard: Count  # index in `shards` of the frames shard holding the clip's frames
    row: Count  # first row of the clip in that shard
    frame_id: Count  # first frame_id of the clip (its frames are consecutive)
    frame_index: list[int]
    frame_sha256: list[Sha256]
    # burned-in text: none found, masked, warned (left in), declared (burned in per the file,
    # none inside the crop); None: not checked (format 1 had no check)
    text: Literal["none", "masked", "warned", "declared"] | None
    # the recipe's facts of the clip (its source's fact columns, typed; None: no row or an empty cell),
    # as its videos row holds them
    facts: dict[str, bool | int | float | str | None]
    # the clip's licence as its source states it (the registry, the recipe, or per clip the source's
    # metadata sheet); None: a format-2 lock, which kept it in the videos table alone
    licence: str | None


class Failure(_Strict):
    source: str
    video_id: str
    sha256: Sha256 | None
    stage: Stage
    reason: str

    def line(self) -> str:
        return f"{self.video_id}: {self.stage}: {self.reason}"


class Excluded(_Strict):
    source: str
    video_id: str  # the id the file would have had (for hashed-id sources: a hash, never a path)
    reason: str


class BuildWarning(_Strict):
    source: str
    video_id: str | None
    kind: WarningKind
    message: str

    def line(self) -> str:
        return f"{self.video_id or self.source}: {self.kind}: {self.message}"


class LabelOverride(_Strict):
    source: str
    video_id: str
    file_name: str
    sheet: str


class Sheet(_Strict):
    missing: list[str] = []  # sheet rows naming a clip the recipe would build whose file is absent
    label_overrides: list[LabelOverride] = []


class SheetFile(_Strict):
    """A file other than a clip that shaped the release (a label sheet, a metadata sheet): where
    it lies in its source's raw folder, and its content. `us4 fetch` checks a download by it."""

    source: Name
    path: RelPath
    sha256: Sha256
    bytes: Count


class SplitTally(_Strict):
    videos: Count
    frames: Count


class Counts(_Strict):
    videos: Count
    frames: Count
    duplicates_dropped: Count
    failures: Count
    excluded: Count
    by_split_label: dict[str, dict[str, SplitTally]]


class Environment(_Strict):
    """`bytes`: versions of everything that shapes a release's bytes (a rebuild needs the
    same); `host`: where it ran (information only, never a reason bytes differ)."""

    bytes: dict[str, str]
    host: dict[str, str]


class Generated(_Strict):
    format: Count
    sha256: Sha256


class Previous(_Strict):
    """The release whose splits this one inherited (`--previous`), and its clips that are gone."""

    name: str
    version: str
    lock_sha256: Sha256
    removed: list[str]  # video ids of the earlier release's clips that this build no longer has


class Lock(_Strict):
    format: Literal["us4-release/3"]
    name: Name
    version: Name
    description: str
    phantom: bool  # built from phantom clips that us4 generated, not from real data
    recipe: LockRecipe
    recipe_sha256: Sha256
    environment: Environment
    previous: Previous | None
    clips: list[Clip]
    failures: list[Failure]
    excluded: list[Excluded]
    warnings: list[BuildWarning]
    sheet: Sheet
    sheets: list[SheetFile]  # every sheet a source read, by content
    counts: Counts
    shards: list[Shard]
    attachments: dict[RelPath, Sha256]
    generated: dict[Literal["README.md", "croissant.json"], Generated]

    _source_sha256: str | None = PrivateAttr(default=None)
    _source_format: str = PrivateAttr(default=FORMAT)

    @property
    def sha256(self) -> str:
        """Names the release's exact content: the sha256 of the lock's canonical JSON (for an
        upgraded format-1 lock, of the JSON of the file as 0.1.0 published it)."""
        return self._source_sha256 or sha256_json(self.to_json())

    @property
    def source_format(self) -> str:
        """The format the lock was written in (format-1 locks are upgraded in memory)."""
        return self._source_format

    def to_json(self) -> dict[str, Any]:
        """The lock as JSON in the format it was written in: a format-2 lock (whose format-3
        fields are empty) as format 2, so that attaching evidence to it changes no data byte."""
        out = self.model_dump(mode="json")
        if self._source_format == FORMAT_V2:
            out["format"] = FORMAT_V2
            for key in _SINCE_V3["lock"]:
                del out[key]
            for clip in out["clips"]:
                for key in _SINCE_V3["clip"]:
                    del clip[key]
        return out

    def fact_fields(self) -> list[tuple[str, str]]:
        """(name, type) of the fact columns its recipe adds to the videos table, in the recipe's order."""
        return self.recipe.fact_fields()

    def shards_of(self, config: str) -> list[Shard]:
        return [s for s in self.shards if s.config == config]

    def files(self, sources: Collection[str] | None = None, splits: Collection[str] | None = None) -> list[str]:
        """Every file the lock names (itself, what it generated, its shards, its attachments),
        or with `sources`/`splits` only those shards (and every other file); an unknown source
        or split is an error listing those the release has."""
        for wanted, have, what in ((sources, {s.source for s in self.shards}, "source"),
                                   (splits, {s.split for s in self.shards}, "split")):
            unknown = sorted(set(wanted or ()) - have)
            if unknown:
                raise ReleaseError(f"no {what} {', '.join(unknown)} in {self.name} {self.version}; "
                                   f"its {what}s: {', '.join(sorted(have))}")
        shards = [s.path for s in self.shards if (not sources or s.source in sources) and (not splits or s.split in splits)]
        names = [LOCK_NAME, *self.generated, *shards, *self.attachments]
        if self.source_format == FORMAT_V1:
            names.append(CARD_NAME)  # format 1 had a card but recorded no hash of it
        return sorted(set(names))

    def data_sha256(self) -> str:
        """The data's identity: the lock without what is added after the build (attachments
        and the files generated from them). Two locks with equal data hashes hold the same
        frames, clips, splits and shards; only evidence about them may differ."""
        return sha256_json({k: v for k, v in self.to_json().items() if k not in ("attachments", "generated")})


def dump_lock(lock: Lock) -> bytes:
    """The one serialisation of `release.json`."""
    return json.dumps(lock.to_json(), indent=1, sort_keys=True).encode() + b"\n"


def read_lock(data: bytes | str, where: str = LOCK_NAME) -> Lock:
    """Parse and validate a lock; LockError names the file and every field at fault, or says
    that it is larger or deeper than a lock can be (MAX_LOCK_BYTES, MAX_LOCK_DEPTH)."""
    if len(data) > MAX_LOCK_BYTES:
        raise LockError(f"{where}: {len(data):,} bytes; a lock holds at most {MAX_LOCK_BYTES:,} "
                        "(some 5 million frames)")
    try:
        raw = json.loads(data)
    except RecursionError:  # json gives up past Python's recursion limit, well beyond MAX_LOCK_DEPTH
        raise LockError(f"{where}: nested more than {MAX_LOCK_DEPTH} levels deep; not a us4 release lock") from None
    except ValueError as exc:
        raise LockError(f"{where}: not JSON ({exc})") from None
    _check_depth(raw, where)
    if not isinstance(raw, dict):
        raise LockError(f"{where}: not a us4 release lock (a JSON object is expected)")
    fmt = raw.get("format")
    if not isinstance(fmt, str) or not fmt.startswith("us4-release/"):
        raise LockError(f"{where}: not a us4 release lock (format {fmt!r})")
    if fmt not in READABLE:
        from ..version import __version__

        raise LockError(f"{where}: format {fmt} is not one this us4 ({__version__}) reads "
                        f"({', '.join(READABLE)}); it was written by a newer us4: upgrade us4 to read it")
    text = json.dumps(raw)  # one decoding (json.loads also took UTF-16 and UTF-32 bytes)
    try:
        if fmt == FORMAT_V1:
            lock = _upgrade(LockV1.model_validate_json(text))
            lock._source_format = FORMAT_V1
            lock._source_sha256 = sha256_json(raw)  # its name as published, not the upgraded model's
        elif fmt == FORMAT_V2:
            lock = Lock.model_validate_json(json.dumps(_from_v2(raw, where)))
            lock._source_format = FORMAT_V2
        else:
            lock = Lock.model_validate_json(text)
    except ValidationError as exc:
        raise LockError(f"{where}: invalid {fmt} lock: {_explain(exc)}") from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:  # a format-1 lock that cannot be upgraded
        raise LockError(f"{where}: invalid {fmt} lock: {type(exc).__name__}: {exc}") from None
    _check_consistent(lock, where)
    return lock


def _from_v2(raw: dict, where: str) -> dict:
    """A format-2 lock as format 3: what format 3 added, empty (never given: format 2 has no
    such field, and one there would be lost when the lock is written back)."""
    clips = raw.get("clips") if isinstance(raw.get("clips"), list) else []
    given = [k for k in _SINCE_V3["lock"] if k in raw] + [
        f"clips.{n}.{k}" for n, c in enumerate(clips) if isinstance(c, dict) for k in _SINCE_V3["clip"] if k in c]
    if given:
        raise LockError(f"{where}: invalid {FORMAT_V2} lock: unknown field {given[0]}")
    out = {**raw, "format": FORMAT, **_SINCE_V3["lock"]}
    if clips:
        out["clips"] = [{**c, **_SINCE_V3["clip"]} if isinstance(c, dict) else c for c in clips]
    return out


def _check_depth(raw: Any, where: str) -> None:
    """LockError when `raw` nests deeper than MAX_LOCK_DEPTH (checked level by level, without
    recursion: everything after this, pydantic and json.dumps included, recurses)."""
    level, depth = [raw], 0
    while level:
        depth += 1
        if depth > MAX_LOCK_DEPTH:
            raise LockError(f"{where}: nested more than {MAX_LOCK_DEPTH} levels deep; not a us4 release lock")
        level = [c for v in level if isinstance(v, (dict, list)) for c in (v.values() if isinstance(v, dict) else v)
                 if isinstance(c, (dict, list))]


def _explain(exc: ValidationError, limit: int = 6) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"missing field {loc}")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field {loc}")
        elif kind == "value_error":  # our own validators' line says what is wrong, and with what
            line = str(err["ctx"]["error"])
            parts.append(line if line.startswith(f"{loc}: ") else f"{loc}: {line}")  # the recipe's names its key
        else:
            parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r:.60})")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


#: a fact's type in a recipe -> the Python types its values have in a lock (a float fact may read as a whole number)
_FACT_VALUES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}


def _check_consistent(lock: Lock, where: str) -> None:
    """What types cannot say: cross-references inside the lock point where they should, the
    recipe is a valid recipe whose hash the lock states, and each clip has its source's facts."""
    recipe = lock.recipe
    if recipe.sha256 != lock.recipe_sha256:
        raise LockError(f"{where}: recipe_sha256 is not the hash of the recipe the lock holds")
    declared = {name: {c.name: c.type for c in spec.facts.columns} if spec.facts else {}
                for name, spec in recipe.sources.items()}
    n = len(lock.shards)
    for clip in lock.clips:
        if clip.shard >= n or lock.shards[clip.shard].config != "frames":
            raise LockError(f"{where}: clip {clip.video_id} names shard {clip.shard}, not a frames shard of the lock")
        if len(clip.frame_index) != len(clip.frame_sha256):
            raise LockError(f"{where}: clip {clip.video_id}: frame_index and frame_sha256 differ in length")
        if lock.source_format != FORMAT_V1:
            _check_facts(clip, declared.get(clip.source, {}), where)
    paths = [s.path for s in lock.shards]
    if len(set(paths)) != len(paths):
        raise LockError(f"{where}: a shard path is listed twice")
    for name in lock.attachments:
        try:
            check_attachment_name(name)
        except ReleaseError as exc:
            raise LockError(f"{where}: {exc}") from None


def _check_facts(clip: Clip, declared: dict[str, str], where: str) -> None:
    """A clip's facts are its source's fact columns, each a value of its type or None."""
    if set(clip.facts) != set(declared):
        raise LockError(f"{where}: clip {clip.video_id}: facts {sorted(clip.facts)!s:.200}, but its recipe declares "
                        f"{sorted(declared)}")
    for name, value in clip.facts.items():
        kind = declared[name]
        if value is not None and (isinstance(value, bool) != (kind == "bool") or not isinstance(value, _FACT_VALUES[kind])):
            raise LockError(f"{where}: clip {clip.video_id}: fact {name} is {value!r:.40}, not a {kind}")


def check_attachment_name(name: str) -> str:
    """An attachment's name: a safe relative path that is none of the release's own files
    and lies outside `data/` (where the configs' patterns would read it as data)."""
    try:
        safe_relpath(name, "attachment name")
    except ValueError as exc:
        raise ReleaseError(str(exc)) from None
    if name in (LOCK_NAME, *GENERATED) or name.split("/")[0] == "data":
        raise ReleaseError(f"{name}: reserved for the release's own files; attach it under another name")
    return name


# --- format 1 (us4 0.1.0), read and upgraded -----------------------------------


class _V1Shard(_Strict):
    path: RelPath
    config: Literal["frames", "videos"]
    split: Name
    rows: Count
    bytes: Count
    sha256: Sha256


class _V1Input(_Strict):
    source: str
    path: str
    sha256: Sha256
    bytes: Count


class _V1Lineage(_Strict):
    clip_sha256: list[Sha256]
    frame_index: list[int]
    pts: list[float]
    frame_sha256: list[Sha256]
    shard: list[Count]
    row: list[Count]

    @model_validator(mode="after")
    def _same_length(self) -> "_V1Lineage":
        if len({len(v) for v in (self.clip_sha256, self.frame_index, self.pts, self.frame_sha256, self.shard,
                                 self.row)}) != 1:
            raise ValueError("lineage lists differ in length")
        return self


class _V1Failure(_Strict):
    source: str
    path: str
    sha256: Sha256 | None
    stage: str
    reason: str


class _V1Excluded(_Strict):
    source: str
    path: str
    reason: str


class _V1Sheet(_Strict):
    missing_files: list[str]
    label_overrides: list[dict[str, str]]


class _V1Counts(_Strict):
    videos: Count
    frames: Count
    duplicates_dropped: Count
    failures: Count
    excluded: Count = 0
    by_split_label: dict[str, dict[str, SplitTally]]


class LockV1(_Strict):
    format: Literal["us4-release/1"]
    name: str
    version: str
    description: str
    recipe: LockRecipe
    recipe_sha256: Sha256
    environment: dict[str, str]
    inputs: list[_V1Input]
    shards: list[_V1Shard]
    lineage: _V1Lineage
    failures: list[_V1Failure]
    excluded: list[_V1Excluded]
    sheet: _V1Sheet
    counts: _V1Counts
    attachments: dict[RelPath, Sha256]


_V1_HOST = ("python", "platform", "us4")
# Format 1 named an unforeseen error "ingest" and had an "encode" stage; neither exists now.
_V1_STAGES = {"ingest": Stage.DECODE, "encode": Stage.DECODE}


def _upgrade(v1: LockV1) -> Lock:
    """A format-1 lock in the format-2 model. Shards kept their single-level paths;
    per-clip labels were never recorded (None)."""
    shards = [Shard(path=s.path, config=s.config, source=_only_source(v1), split=s.split, rows=s.rows,
                    bytes=s.bytes, sha256=s.sha256) for s in v1.shards]
    by_sha: dict[str, _V1Input] = {}
    for i in v1.inputs:
        by_sha.setdefault(i.sha256, i)
    lin = v1.lineage
    clips: list[Clip] = []
    start = 0
    for end in range(1, len(lin.clip_sha256) + 1):
        last = end == len(lin.clip_sha256)
        if not last and lin.clip_sha256[end] == lin.clip_sha256[start] and lin.shard[end] == lin.shard[start] \
                and lin.frame_index[end] > lin.frame_index[end - 1]:
            continue
        sha = lin.clip_sha256[start]
        item = by_sha.get(sha)
        split = v1.shards[lin.shard[start]].split
        clips.append(Clip(
            video_id=f"{item.source}/{item.path}" if item else sha, source=item.source if item else "",
            sha256=sha, bytes=item.bytes if item else None, label=None, split=split,
            fold=fold_of(split), group=None,
            shard=lin.shard[start], row=lin.row[start], frame_id=start,
            frame_index=lin.frame_index[start:end], frame_sha256=lin.frame_sha256[start:end], text=None, facts={},
            licence=None))
        start = end
    return Lock(
        format=FORMAT, name=safe_name(v1.name, "name"), version=safe_name(v1.version, "version"),
        description=v1.description, phantom=False, recipe=v1.recipe, recipe_sha256=v1.recipe_sha256,
        environment=Environment(bytes={k: v for k, v in v1.environment.items() if k not in _V1_HOST},
                                host={k: v for k, v in v1.environment.items() if k in _V1_HOST}),
        previous=None, clips=clips,
        failures=[Failure(source=f.source, video_id=f"{f.source}/{f.path}", sha256=f.sha256,
                          stage=_V1_STAGES.get(f.stage) or Stage(f.stage),
                          reason=(f"(us4 0.1.0 stage {f.stage!r}) " if f.stage in _V1_STAGES else "") + f.reason)
                  for f in v1.failures],
        excluded=[Excluded(source=e.source, video_id=f"{e.source}/{e.path}", reason=e.reason) for e in v1.excluded],
        warnings=[],
        sheets=[],
        sheet=Sheet(missing=v1.sheet.missing_files,
                    label_overrides=[LabelOverride(source=o["source"], video_id=f"{o['source']}/{o['path']}",
                                                   file_name=o["file_name"], sheet=o["sheet"])
                                     for o in v1.sheet.label_overrides]),
        counts=Counts(videos=v1.counts.videos, frames=v1.counts.frames,
                      duplicates_dropped=v1.counts.duplicates_dropped, failures=v1.counts.failures,
                      excluded=v1.counts.excluded, by_split_label=v1.counts.by_split_label),
        shards=shards, attachments=v1.attachments, generated={})


def _only_source(v1: LockV1) -> str:
    # format 1 shards mixed every source of a split: its source where it had one, else "mixed"
    sources = sorted(v1.recipe.sources)
    return safe_name(sources[0], "source") if len(sources) == 1 else "mixed"
