"""Recipe + raw folders -> a sorted list of clip jobs, with what was left out and why.

Planning reads folders and hashes files; it decodes nothing. Labels come from the
registry (file-name prefix) and, for POCUS, the metadata sheet, which wins.
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RawFolderError, RecipeError
from ..hashing import sha256_file, sha256_json
from ..media import VIDEO_SUFFIXES
from ..recipe import Recipe
from ..registry import ClassDef, Source, get_source
from .failure import Failure

# Bump when ingest changes what it makes of the same clip and parameters: invalidates caches.
INGEST_VERSION = 1


@dataclass(frozen=True)
class ClipJob:
    source: str
    rel_path: str  # posix path relative to the source's clip folder
    path: str  # absolute path, never written to a release
    label: str
    label_id: int
    us4_label: int | None
    probe: str
    organ: str
    licence: str
    sha256: str
    size: int
    params: dict  # the recipe's part that shapes this clip
    key: str  # cache key: clip bytes + params

    @property
    def video_id(self) -> str:
        return f"{self.source}/{self.rel_path}"


@dataclass
class Plan:
    jobs: list[ClipJob] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)  # every clip file read, for the lock
    sheet_missing: list[str] = field(default_factory=list)
    label_overrides: list[dict] = field(default_factory=list)


def make_plan(recipe: Recipe, raw: dict[str, Path], threads: int = 4) -> Plan:
    """List, label, filter and hash every clip of every source the recipe names."""
    for name in raw:
        get_source(name)  # unknown names fail with the list of known ones
        if name not in recipe.sources:
            raise RecipeError(f"--raw {name}=...: recipe {recipe.name!r} has no source {name!r} "
                              f"(it has: {', '.join(sorted(recipe.sources))})")
    missing = sorted(set(recipe.sources) - set(raw))
    if missing:
        raise RawFolderError(f"no --raw folder given for source(s) {', '.join(missing)} "
                             f"(pass --raw {missing[0]}=DIR)")
    plan = Plan()
    candidates: list[tuple[Source, Path, str, ClassDef, str, str]] = []
    for name in sorted(raw):
        source = get_source(name)
        clip_root, sheet = _resolve_folder(source, Path(raw[name]))
        spec = recipe.sources[name]
        rows = _read_sheet(source, sheet) if sheet else {}
        found: set[str] = set()
        for rel in _walk(clip_root):
            ext = os.path.splitext(rel)[1].lower()
            if ext not in VIDEO_SUFFIXES:
                plan.excluded.append({"source": name, "path": rel, "reason": f"not a video file extension ({ext or 'none'})"})
                continue
            stem = os.path.splitext(os.path.basename(rel))[0]
            found.add(stem)
            probe = _probe_of(source, rel)
            row = rows.get(stem)
            cls, reason = _label(source, os.path.basename(rel), row, plan, rel)
            if cls is None:
                plan.failures.append(Failure(name, rel, None, "plan", reason))
                continue
            if spec.probes is not None and probe not in spec.probes:
                plan.excluded.append({"source": name, "path": rel, "reason": f"probe {probe} not in recipe {list(spec.probes)}"})
                continue
            if spec.classes is not None and cls.name not in spec.classes:
                plan.excluded.append({"source": name, "path": rel, "reason": f"class {cls.name} not in recipe {list(spec.classes)}"})
                continue
            licence = source.licence
            if row is not None and source.sheet_licence and source.sheet_licence in row:
                licence = row[source.sheet_licence]
            candidates.append((source, clip_root / rel, rel, cls, probe, licence))
        if rows:
            plan.sheet_missing.extend(_sheet_rows_without_files(source, spec, rows, found))
    digests = _hash_all([c[1] for c in candidates], threads)
    for (source, path, rel, cls, probe, licence), (digest, size) in zip(candidates, digests):
        params = recipe.clip_params(source.name, rel)
        plan.jobs.append(ClipJob(
            source=source.name, rel_path=rel, path=str(path), label=cls.name,
            label_id=source.label_id(cls), us4_label=cls.us4_head, probe=probe, organ=source.organ,
            licence=licence, sha256=digest, size=size, params=params,
            key=sha256_json({"sha256": digest, "params": params, "ingest": INGEST_VERSION}),
        ))
        plan.inputs.append({"source": source.name, "path": rel, "sha256": digest, "bytes": size})
    plan.jobs.sort(key=lambda j: j.video_id)
    plan.inputs.sort(key=lambda i: (i["source"], i["path"]))
    return plan


def _resolve_folder(source: Source, folder: Path) -> tuple[Path, Path | None]:
    """The folder holding the clips, and the metadata sheet if the source has one."""
    if not folder.is_dir():
        raise RawFolderError(f"--raw {source.name}={folder}: no such folder")
    if source.sheet is None:
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


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def _probe_of(source: Source, rel: str) -> str:
    for part in rel.split("/")[:-1]:
        if part.lower() in source.probe_folders:
            return part.lower()
    return source.probe if not source.probe_folders else "unknown"


def _label(source: Source, file_name: str, row: dict | None, plan: Plan, rel: str) -> tuple[ClassDef | None, str]:
    by_name = source.class_of_name(file_name)
    by_sheet = None
    if row is not None and source.sheet_label and source.sheet_label in row:
        by_sheet = source.class_of_sheet(str(row[source.sheet_label]))
    if by_sheet is not None:
        if by_name is not None and by_name != by_sheet:
            plan.label_overrides.append({"source": source.name, "path": rel, "file_name": by_name.name,
                                         "sheet": by_sheet.name})
        return by_sheet, ""
    if by_name is not None:
        return by_name, ""
    prefixes = ", ".join(p for c in source.classes for p in c.prefixes)
    return None, f"unreadable label: file name has none of the prefixes {prefixes}" + (
        " and the metadata sheet has no usable label for it" if source.sheet else "")


def _read_sheet(source: Source, path: Path) -> dict[str, dict]:
    """Rows of the metadata sheet by file stem; empty cells are absent keys."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows_in = [{k: v.strip() for k, v in row.items() if k and isinstance(v, str) and v.strip()}
                       for row in reader]
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RawFolderError(f"{path}: cannot read the metadata sheet ({exc})") from None
    if source.sheet_key not in columns:
        raise RawFolderError(f"{path}: metadata sheet has no {source.sheet_key!r} column")
    rows: dict[str, dict] = {}
    for row in rows_in:
        key = row.get(source.sheet_key)
        if key and key not in rows:
            rows[key] = row
    return rows


def _sheet_rows_without_files(source: Source, spec, rows: dict[str, dict], found: set[str]) -> list[str]:
    """Sheet rows of videos this recipe would build whose file is not in the folder."""
    out = []
    for stem, row in rows.items():
        if stem in found or str(row.get("Type", "video")).strip().lower() != "video":
            continue
        cls = source.class_of_sheet(str(row.get(source.sheet_label, "")))
        probe = str(row.get("Probe", "")).strip().lower()
        if cls is None or (spec.classes is not None and cls.name not in spec.classes):
            continue
        if spec.probes is not None and probe not in spec.probes:
            continue
        out.append(f"{stem} ({cls.name}, {probe})")
    return sorted(out)


def _hash_all(paths: list[Path], threads: int) -> list[tuple[str, int]]:
    def one(p: Path) -> tuple[str, int]:
        return sha256_file(p), p.stat().st_size

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths))
