"""Recipe + raw folders -> a sorted list of clip jobs, with what was left out and why.

Planning lists folders, reads DICOM headers and hashes files; it decodes no pixels.
Labels come from the recipe's label rule: the registry's (file-name prefix, and for
POCUS its metadata sheet, which wins), a prefix, a constant, or a sheet, met by the clip's
path, stem, content hash or a key a pattern takes from its path; per-video facts (typed
columns of the videos table) from a sheet met the same ways. A source with
`ids: hash` names its clips by content hash: no path, folder or file name of it reaches
the release or its lock, only the local id map in the folder beside it (`OUT.local/`).
"""
from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, PlainSerializer, PlainValidator, SerializerFunctionWrapHandler,
                      field_serializer, model_serializer, model_validator)

from ..contract.lock import BuildWarning, Excluded, Failure, LabelOverride, SheetFile, Stage, WarningKind
from ..errors import RawFolderError, RecipeError
from ..hashing import clip_digest, sha256_file, sha256_json
from ..paths import inside
from ..media import MediaError, SamplingPolicy, tissue_regions
from ..media.clips import ClipRef, FoundClip, NotAClip, find_clips, probe_clip
from ..recipe import INPUTS, MAX_FACT_CHARS, REGION_MODES, TEXT_ACTIONS, Recipe, SourceRecipe
from ..registry import ClassDef, Source
from ..words import plural
from .environment import byte_libraries

# Bump when ingest changes what it makes of the same clip and parameters: invalidates caches.
INGEST_VERSION = 3
#: a file that us4's phantom generator leaves in every folder it fills
PHANTOM_MARKER = ".us4-phantom"
_HASH_ID_CHARS = 20  # 80 bits of the content sha256 name a clip of an `ids: hash` source


def _policy(value: Any) -> SamplingPolicy:
    return value if isinstance(value, SamplingPolicy) else SamplingPolicy.from_dict(value)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CropParams(_Params):
    """The crop one clip gets: the recipe's mode, or its box (the recipe's, or an override naming the clip)."""

    mode: Literal["auto", "none", "box"]
    box: tuple[int, int, int, int] | None = None

    @model_validator(mode="after")
    def _box_with_box_mode(self) -> CropParams:
        if (self.box is not None) != (self.mode == "box"):
            raise ValueError("a crop has a box exactly when its mode is box")
        return self


class ClipParams(_Params):
    """Everything in the recipe that shapes one clip's frames. Its JSON form (`model_dump(mode="json")`)
    is what the clip's cache key hashes: the sampling policy's set fields only, a crop's box only
    in box mode, as the recipe's dict of them always was, so caches made before it was typed stay valid."""

    input: Literal[INPUTS]
    fps: float | None  # image sequences, and DICOM files without timing
    sampling: Annotated[SamplingPolicy, PlainValidator(_policy), PlainSerializer(lambda p: p.to_dict())]
    crop: CropParams
    regions: Literal[REGION_MODES]
    max_frame_pixels: int
    text: Literal[TEXT_ACTIONS]
    dedup: float  # mean absolute grey-level difference below which a frame repeats the last kept one
    png_compress_level: int
    view: int | None  # one view (2D region) of a multi-view DICOM file, with the recipe's regions: each
    # a 64 px thumbnail per frame, only where the recipe joins clips by near-duplicate frames (nothing
    # else reads it; on BLUES every frame it was 9 % of a build's CPU)
    thumbnails: bool = True

    @field_serializer("crop")
    def _crop(self, crop: CropParams) -> dict:
        return crop.model_dump(mode="json", exclude_none=True)

    @model_serializer(mode="wrap")
    def _key_form(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Without `thumbnails` where it is true: the form every cache key had before it existed."""
        data = handler(self)
        if data.get("thumbnails") is True:
            del data["thumbnails"]
        return data


@dataclass(frozen=True)
class ClipJob:
    source: str
    video_id: str  # published: SOURCE/relative/path, or SOURCE/content-hash
    rel_path: str | None  # relative to the raw folder; None when the source's ids are hashes (never published)
    ref: ClipRef  # local files, never published
    label: str
    label_id: int
    us4_label: int | None
    probe: str
    organ: str
    licence: str
    sha256: str
    size: int
    group_key: str | None  # the sheet's grouping column, when the recipe names one
    params: ClipParams  # the recipe's part that shapes this clip
    facts: dict  # the recipe's facts of the clip: {column: value or None}, empty where it declares none
    key: str  # cache key: clip bytes + params + byte-shaping library versions

    @property
    def input(self) -> str:
        return self.ref.kind


@dataclass
class Plan:
    jobs: list[ClipJob] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    warnings: list[BuildWarning] = field(default_factory=list)
    sheet_missing: list[str] = field(default_factory=list)
    sheet_missing_unshipped: int = 0  # of those, rows the public repository does not ship either
    label_overrides: list[LabelOverride] = field(default_factory=list)
    phantom: bool = False  # some raw folder was written by us4's phantom generator
    local_ids: list[dict] = field(default_factory=list)  # video_id -> where it came from, kept on this machine
    # ledger entries whose published reason leaves out a value (a sheet cell, a name): the whole reason, kept here
    withheld: list[dict] = field(default_factory=list)
    sources_found: dict[str, int] = field(default_factory=dict)  # clips listed per source
    sheets: list[SheetFile] = field(default_factory=list)  # every sheet read, by content (in the lock)


@dataclass(frozen=True)
class _Candidate:
    source: SourceRecipe
    found: FoundClip
    sha256: str
    size: int


def make_plan(recipe: Recipe, raw: dict[str, Path], threads: int = 4) -> Plan:
    """List, label, filter and hash every clip of every source the recipe names."""
    for name in raw:
        if name not in recipe.sources:
            raise RecipeError(f"--raw {name}=...: recipe {recipe.name!r} has no source {name!r} "
                              f"(it has: {', '.join(sorted(recipe.sources))})")
    missing = sorted(set(recipe.sources) - set(raw))
    if missing:
        raise RawFolderError(f"no --raw folder given for source(s) {', '.join(missing)} "
                             f"(pass --raw {missing[0]}=DIR)")
    libraries = byte_libraries(text=checks_text(recipe))
    plan = Plan()
    for name in sorted(raw):
        spec = recipe.sources[name]
        folder = Path(raw[name])
        if not folder.is_dir():
            raise RawFolderError(f"--raw {name}={folder}: no such folder")
        plan.phantom |= (folder / PHANTOM_MARKER).is_file()
        clips = folder if spec.clips == "." else inside(folder, spec.clips, "clips folder")
        if not clips.is_dir():
            raise RawFolderError(f"--raw {name}={folder}: the recipe's clips folder {spec.clips} is not there")
        clip_root, registry_sheet = _resolve_folder(spec, clips)
        label_sheet = _sheet_file(spec, folder, spec.label.sheet, "label") if spec.label.kind == "sheet" else None
        facts_sheet = _sheet_file(spec, folder, spec.facts.sheet, "facts") if spec.facts else None
        read = sorted({registry_sheet, label_sheet, facts_sheet} - {None})
        # by its place in the raw folder (POCUS given as data/pocus_videos: in data/, as the repository has it)
        plan.sheets += [SheetFile(source=name, path=sheet.relative_to(folder if sheet.is_relative_to(folder)
                                                                      else clip_root.parent).as_posix(),
                                  sha256=sha256_file(sheet), bytes=sheet.stat().st_size)
                        for sheet in read]
        found, other = find_clips(spec.input, clip_root, spec.fps)
        _refuse(plan, spec, [o for o in other if o.refused])
        sheets_here = {sheet.relative_to(clip_root).as_posix() for sheet in read if sheet.is_relative_to(clip_root)}
        other = [o for o in other if not o.refused and o.rel not in sheets_here]
        hashed_other = other if spec.ids == "hash" else []  # their names may not be published either
        digests = _hash_all([f.files for f in found] + [(str(clip_root / o.rel),) for o in hashed_other], threads)
        candidates = [_Candidate(spec, f, *d) for f, d in zip(found, digests)]
        plan.sources_found[name] = len(candidates)
        for o, d in zip(other, digests[len(found):] if hashed_other else [None] * len(other)):
            if spec.ids == "path":
                plan.excluded.append(Excluded(source=name, video_id=f"{name}/{o.rel}", reason=o.reason))
                continue
            video_id = _hash_id(name, d[0])
            reason = hide_names(o.reason, _names_in(o.rel))
            plan.excluded.append(Excluded(source=name, video_id=video_id, reason=reason))
            if reason != o.reason:
                plan.withheld.append({"video_id": video_id, "source": name, "path": o.rel, "reason": o.reason})
        _plan_source(plan, recipe, spec, candidates, registry_sheet, label_sheet, facts_sheet, libraries)
        if registry_sheet is None and spec.label.kind == "registry" and spec.definition.sheet:
            plan.warnings.append(BuildWarning(
                source=name, video_id=None, kind=WarningKind.SHEET_MISSING,
                message=f"no {spec.definition.sheet} beside the clips: labels come from file names alone"))
        present = {c.found.rel for c in candidates} | {c.sha256 for c in candidates}
        for path, _ in spec.crop.clips:
            if path not in present:
                plan.warnings.append(BuildWarning(
                    source=name, video_id=None, kind=WarningKind.UNKNOWN_CLIP,
                    message=f"the recipe's crop override names a clip that is not in the raw folder ({path})"))
    plan.jobs.sort(key=lambda j: j.video_id)
    plan.failures.sort(key=lambda f: f.video_id)
    plan.excluded.sort(key=lambda e: e.video_id)
    plan.local_ids.sort(key=lambda e: e["video_id"])
    return plan


def _plan_source(plan: Plan, recipe: Recipe, spec: SourceRecipe, candidates: list[_Candidate],
                 registry_sheet: Path | None, label_sheet: Path | None, facts_sheet: Path | None,
                 libraries: dict) -> None:
    source = spec.definition
    public = spec.ids == "path"
    rows = _read_sheet(registry_sheet, source.sheet_key, public) if registry_sheet else None
    label_rows = _read_sheet(label_sheet, spec.label.key_column, public) if label_sheet else None
    fact_rows = (_read_sheet(facts_sheet, spec.facts.key_column, public, [c.column for c in spec.facts.columns])
                 if facts_sheet else None)
    no_facts = 0  # clips the facts sheet has no row for
    group_columns = list(recipe.splits.group_columns)
    # the cells that decide something: rows naming one clip twice must agree on them
    deciding = [source.sheet_label, source.sheet_licence] if rows is not None else [spec.label.column]
    deciding = [c for c in deciding if c] + group_columns
    seen: dict[str, str] = {}  # content hash -> video id, for hashed-id sources
    copies: Counter = Counter()
    found_stems: set[str] = set()
    for cand in candidates:
        rel = cand.found.rel
        video_id = f"{spec.name}/{rel}" if spec.ids == "path" else _hash_id(spec.name, cand.sha256)
        base = os.path.basename(rel)
        stem = os.path.splitext(base)[0] if spec.input == "video" else base
        found_stems.add(stem)
        copy = spec.ids == "hash" and cand.sha256 in seen
        if copy:
            copies[cand.sha256] += 1
            video_id = f"{video_id}#copy{copies[cand.sha256]}"
        plan.local_ids.append({"video_id": video_id, "source": spec.name, "path": rel, "sha256": cand.sha256})
        if copy:
            plan.excluded.append(Excluded(source=spec.name, video_id=video_id,
                                          reason=f"same content as {seen[cand.sha256]}"))
            continue
        seen[cand.sha256] = video_id
        if label_rows is not None:
            key = spec.label.key.of(rel, stem, cand.sha256)
            row = label_rows.row(key, deciding, public) if key is not None else None
            cls, reason, value = _label_from_sheet(source, row, spec, key, public)
        else:
            row = rows.row(stem, deciding, public) if rows is not None else None
            cls, reason = _label(spec, base, row.cells if row else None, plan, video_id)
            value = None
        if cls is None:
            plan.failures.append(Failure(source=spec.name, video_id=video_id, sha256=cand.sha256,
                                         stage=Stage.PLAN, reason=reason))
            if value is not None:
                plan.withheld.append({"video_id": video_id, "source": spec.name, "path": rel,
                                      "reason": f"{reason}: it is {value!r}"})
            continue
        probe = _probe_of(source, rel)
        if spec.probes is not None and probe not in spec.probes:
            plan.excluded.append(Excluded(source=spec.name, video_id=video_id,
                                          reason=f"probe {probe} not in recipe {list(spec.probes)}"))
            continue
        if spec.classes is not None and cls.name not in spec.classes:
            plan.excluded.append(Excluded(source=spec.name, video_id=video_id,
                                          reason=f"class {cls.name} not in recipe {list(spec.classes)}"))
            continue
        licence = source.licence
        if row is not None and source.sheet_licence and source.sheet_licence in row.cells:
            licence = row.cells[source.sheet_licence]
        values = [row.cells.get(c) for c in group_columns] if row is not None else []
        group_key = " | ".join(f"{c}={v}" for c, v in zip(group_columns, values)) if values and all(values) else None
        facts: dict = {}
        if fact_rows is not None:
            key = spec.facts.key.of(rel, stem, cand.sha256)
            fact_row = fact_rows.row(key, [c.column for c in spec.facts.columns], public) if key is not None else None
            no_facts += fact_row is None
            facts, reason, value = _facts_from_sheet(spec, fact_row)
            if reason is not None:
                plan.failures.append(Failure(source=spec.name, video_id=video_id, sha256=cand.sha256,
                                             stage=Stage.PLAN, reason=reason))
                plan.withheld.append({"video_id": video_id, "source": spec.name, "path": rel,
                                      "reason": f"{reason}: it is {value!r:.200}"})
                continue
        for view in _views(spec, cand.found):
            params = ClipParams.model_validate({**recipe.clip_params(spec.name, rel, cand.sha256), "view": view})
            plan.jobs.append(ClipJob(
                source=spec.name, video_id=video_id + (f"#view{view + 1}" if view is not None else ""),
                rel_path=rel if spec.ids == "path" else None, ref=cand.found.ref, label=cls.name,
                label_id=source.label_id(cls), us4_label=cls.us4_head, probe=probe, organ=source.organ,
                licence=licence, sha256=cand.sha256, size=cand.size, group_key=group_key, params=params,
                key=sha256_json({"sha256": cand.sha256, "params": params.model_dump(mode="json"),
                                 "ingest": INGEST_VERSION, "libraries": libraries}),
                facts=facts,
            ))
    if no_facts:
        named = ", ".join(c.name for c in spec.facts.columns)
        plan.warnings.append(BuildWarning(
            source=spec.name, video_id=None, kind=WarningKind.FACTS_MISSING,
            message=f"{spec.facts.sheet} has no row for {plural(no_facts, 'clip')} (matched by the clip's "
                    f"{spec.facts.key}): {'its' if no_facts == 1 else 'their'} {named} are null"))
    if rows is not None:
        missing = _sheet_rows_without_files(source, spec, rows, found_stems)
        plan.sheet_missing.extend(m for m, _ in missing)
        plan.sheet_missing_unshipped += sum(not shipped for _, shipped in missing)


def checks_text(recipe: Recipe) -> bool:
    """Whether some source of the recipe looks for burned-in text (its detector then shapes bytes)."""
    return any(s.text != "off" for s in recipe.sources.values())


def _views(spec: SourceRecipe, found: FoundClip) -> list[int | None]:
    """With `regions: each`, one clip per 2D region of a dual (multi) view DICOM file (its
    header says; no pixel is read); else the clip itself (None)."""
    if spec.input != "dicom" or spec.regions != "each":
        return [None]
    try:
        n = len(tissue_regions(probe_clip(found.ref).regions))
    except MediaError:
        return [None]  # ingest records the clip's failure at its probe stage
    return list(range(n)) if n > 1 else [None]


def hide_names(text: str, names: dict[str, str]) -> str:
    """`text` with every whole occurrence of a name (a path, a file name, a suffix)
    replaced by what stands for it, in one pass (so a replacement is never read as a name),
    longest first (a whole path before the name inside it)."""
    if not names:
        return text
    ordered = sorted(names, key=len, reverse=True)
    pattern = "|".join(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])" for n in ordered)
    return re.sub(pattern, lambda m: names[m.group(0)], text)


def _names_in(rel: str) -> dict[str, str]:
    """What of a file's path relative to its raw folder may identify, and what stands for each
    in a published reason: the path, the file name, and its suffix (as written, and in lower
    case as media reasons quote it: "DOE.JOHN" has the suffix ".john")."""
    name = os.path.basename(rel)
    suffix = os.path.splitext(name)[1]
    names = {suffix: "(withheld)", suffix.lower(): "(withheld)"} if len(suffix) > 1 else {}
    return {**names, name: "the file", rel: "the file"}


def _refuse(plan: Plan, spec: SourceRecipe, refused: list[NotAClip]) -> None:
    """Entries of a raw folder never opened (special files, links leading out): failures in the
    ledger. Where names may identify (`ids: hash`) and no content was read to hash, each is
    named by its place among them; the local id map says which file it was."""
    for k, entry in enumerate(refused):
        video_id = f"{spec.name}/{entry.rel}" if spec.ids == "path" else f"{spec.name}/unread-{k + 1}"
        plan.failures.append(Failure(source=spec.name, video_id=video_id, sha256=None, stage=Stage.PLAN,
                                     reason=entry.reason))
        plan.local_ids.append({"video_id": video_id, "source": spec.name, "path": entry.rel, "sha256": ""})


def _hash_id(source: str, sha256: str) -> str:
    return f"{source}/{sha256[:_HASH_ID_CHARS]}"


def _resolve_folder(spec: SourceRecipe, folder: Path) -> tuple[Path, Path | None]:
    """The folder holding the clips, and the registry's metadata sheet if the source has one."""
    source = spec.definition
    if source.sheet is None or spec.label.kind != "registry":
        return folder, None
    # POCUS: a checkout's data/ folder (pocus_videos/ + the sheet), or pocus_videos/ itself
    clip_root = folder / "pocus_videos" if (folder / "pocus_videos").is_dir() else folder
    if not any(d.lower() in source.probe_folders for d in os.listdir(clip_root)):
        raise RawFolderError(
            f"--raw {source.name}={folder}: expected the dataset's data/ folder, holding "
            f"pocus_videos/{{{','.join(source.probe_folders)}}}/ and {source.sheet}")
    for candidate in (folder / source.sheet, clip_root.parent / source.sheet):
        if candidate.is_file():
            return clip_root, candidate
    return clip_root, None


def _sheet_file(spec: SourceRecipe, folder: Path, sheet: str, what: str) -> Path:
    path = inside(folder, sheet, f"{what} sheet")
    if not path.is_file():
        raise RawFolderError(f"--raw {spec.name}={folder}: the recipe's {what} sheet {sheet} is not there")
    return path


def _probe_of(source: Source, rel: str) -> str:
    for part in rel.split("/")[:-1]:
        if part.lower() in source.probe_folders:
            return part.lower()
    return source.probe if not source.probe_folders else "unknown"


def _label(spec: SourceRecipe, file_name: str, row: dict | None, plan: Plan,
           video_id: str) -> tuple[ClassDef | None, str]:
    source = spec.definition
    if spec.label.kind == "constant":
        return source.class_named(spec.label.constant), ""
    by_name = source.class_of_name(file_name)
    by_sheet = None
    if spec.label.kind == "registry" and row is not None and source.sheet_label and source.sheet_label in row:
        by_sheet = source.class_of_sheet(str(row[source.sheet_label]))
    if by_sheet is not None:
        if by_name is not None and by_name != by_sheet:
            plan.label_overrides.append(LabelOverride(source=source.name, video_id=video_id, file_name=by_name.name,
                                                      sheet=by_sheet.name))
        return by_sheet, ""
    if by_name is not None:
        return by_name, ""
    prefixes = ", ".join(p for c in source.classes for p in c.prefixes)
    what = "file name" if spec.ids == "path" else "name"
    return None, f"unreadable label: the {what} has none of the prefixes {prefixes}" + (
        " and the metadata sheet has no usable label for it" if source.sheet and spec.label.kind == "registry" else "")


def _label_from_sheet(source: Source, row: _Row | None, spec: SourceRecipe, key: str | None,
                      public: bool) -> tuple[ClassDef | None, str, str | None]:
    """The class a label sheet gives a clip, or why none: the reason (published) names the row
    and the column, never the cell, which may hold anything (a patient's name); the cell's
    value is returned apart, for the local files. A key a pattern took from the path is named
    where paths are published, and withheld like a cell where they are not."""
    sheet = spec.label.sheet  # the recipe's name for it: published with the recipe
    if key is None:
        return None, "unreadable label: the clip's path does not match the label key pattern", None
    if row is None:
        if spec.label.key.kind != "pattern":
            return None, f"unreadable label: {sheet} has no row for this clip's {spec.label.key}", None
        shown = f"{key!r:.80}" if public else "this clip's key"
        return (None, f"unreadable label: {sheet} has no row whose {spec.label.key_column!r} is {shown}",
                None if public else key)
    value = row.cells.get(spec.label.column, "")
    cls = next((c for c in source.classes if value.lower() in (c.name.lower(), *(v.lower() for v in c.sheet_labels))),
               None)
    if cls is None:
        what = "is empty" if not value else f"is not one of {', '.join(c.name for c in source.classes)}"
        return None, f"unreadable label: row {row.number} of {sheet}: {spec.label.column!r} {what}", value or None
    return cls, "", None


_BOOLS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def _facts_from_sheet(spec: SourceRecipe, row: _Row | None) -> tuple[dict, str | None, str | None]:
    """The clip's facts from its row (all null without one; an empty cell is null), or the reason
    a cell is not of its column's type: it names the row and the column, never the cell, whose
    value is returned apart for the local files."""
    facts: dict = {}
    for column in spec.facts.columns:
        cell = row.cells.get(column.column) if row is not None else None
        try:
            facts[column.name] = None if cell is None else _typed(cell, column.type)
        except ValueError as exc:
            return {}, f"unreadable fact: row {row.number} of {spec.facts.sheet}: {column.column!r} {exc}", cell
    return facts, None, None


def _typed(cell: str, kind: str) -> bool | int | float | str:
    """A stripped, non-empty cell as a value of its fact's type; ValueError says why it is not one."""
    if kind == "bool":
        if cell.lower() not in _BOOLS:
            raise ValueError("is not yes, no, true, false, 1 or 0")
        return _BOOLS[cell.lower()]
    if kind == "str":
        if len(cell) > MAX_FACT_CHARS:
            raise ValueError(f"holds more than {MAX_FACT_CHARS:,} characters")
        return cell
    try:
        number = float(cell)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"is not {'a finite number' if kind == 'float' else 'a whole number'}")
    if kind == "float":
        return number
    if not number.is_integer() or not -2**63 <= number < 2**63:
        raise ValueError("is not a whole number of at most 64 bits")
    return int(cell) if re.fullmatch(r"[+-]?\d+", cell) else int(number)  # "12" exactly; "12.0" as a sheet writes it


@dataclass(frozen=True)
class _Row:
    number: int  # the line of the sheet where the row starts (the header is row 1), as an editor shows it
    cells: dict[str, str]  # stripped; empty cells are absent


@dataclass(frozen=True)
class _Sheet:
    path: Path
    rows: dict[str, list[_Row]]  # by key, in sheet order: a key may be named by more than one row

    def row(self, key: str, deciding: list[str], public: bool) -> _Row | None:
        """The row naming `key`. Rows naming it more than once must agree on the `deciding`
        cells (label, licence, grouping): else which one holds is a guess, and that is an error
        naming the rows (and the key, unless names may identify: `public` is False)."""
        rows = self.rows.get(key, [])
        for other in rows[1:]:
            differ = next((c for c in deciding if rows[0].cells.get(c) != other.cells.get(c)), None)
            if differ is not None:
                named = f"both name {key!r}" if public else "name one clip"
                raise RawFolderError(f"{self.path}: rows {rows[0].number} and {other.number} {named} with different "
                                     f"{differ!r} values; keep one row per clip")
        return rows[0] if rows else None


def _read_sheet(path: Path, key_column: str | None, public: bool, columns_needed: Sequence[str] = ()) -> _Sheet:
    """Rows of a CSV sheet by their key column, which it must have, as every column of
    `columns_needed`. Where names may identify (`public` False), an error names columns by
    position and never quotes a cell: a sheet without its header row would otherwise show its
    first row."""
    rows: dict[str, list[_Row]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            columns = [c.strip() for c in next(reader, [])]
            absent = next((c for c in (key_column, *columns_needed) if c not in columns), None)
            if absent is not None:
                listed = (f"it has: {', '.join(c for c in columns if c)}" if public else
                          f"its first row has {len(columns)} cells; is the header row missing?")
                raise RawFolderError(f"{path}: sheet has no {absent!r} column ({listed})")
            key_at = columns.index(key_column)
            start = reader.line_num + 1
            for cells in reader:
                number, start = start, reader.line_num + 1
                key = cells[key_at].strip() if key_at < len(cells) else ""
                if key:
                    rows.setdefault(key, []).append(_Row(number, {c: v.strip() for c, v in zip(columns, cells)
                                                                  if c and v.strip()}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RawFolderError(f"{path}: cannot read the sheet ({exc})") from None
    return _Sheet(path, rows)


def _sheet_rows_without_files(source: Source, spec: SourceRecipe, sheet: _Sheet,
                              found: set[str]) -> list[tuple[str, bool]]:
    """Sheet rows of videos this recipe would build whose file is not in the folder, and
    whether the public repository ships each (False where its sheet says it does not); by
    the row's number, not its file name, where names may identify."""
    out = []
    for stem, (first, *_) in sheet.rows.items():
        row = first.cells
        if stem in found or str(row.get("Type", "video")).strip().lower() != "video":
            continue
        cls = source.class_of_sheet(str(row.get(source.sheet_label, "")))
        probe = str(row.get("Probe", "")).strip().lower()
        if cls is None or (spec.classes is not None and cls.name not in spec.classes):
            continue
        if spec.probes is not None and probe not in spec.probes:
            continue
        shipped = str(row.get(source.sheet_shipped, "yes")).strip().lower() != "no" if source.sheet_shipped else True
        if spec.ids == "path":
            out.append((f"{stem} ({cls.name}, {probe})", shipped))
        else:  # names and free cells may identify: the row's number, and the probe only where it is a known one
            shown = probe if probe in source.probe_folders else "probe withheld"
            out.append((f"row {first.number} ({cls.name}, {shown})", shipped))
    return sorted(out)


def _hash_all(groups: list[tuple[str, ...]], threads: int) -> list[tuple[str, int]]:
    """(sha256, bytes) of each clip (`hashing.clip_digest`)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(clip_digest, groups))
