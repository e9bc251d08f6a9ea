"""A recipe file -> a validated, hashable `Recipe`.

A recipe declares everything a release's bytes depend on besides the clips and the
library versions: which sources (from the registry, or declared in the recipe itself),
in what raw form they come, how clips are named and labelled, how frames are sampled,
cropped and cleaned of burned-in text, how near-duplicates are dropped, how videos are
split, and how shards are encoded. `Recipe.to_dict()` states every default explicitly,
so the copy in a release's lock says exactly what was done.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .hashing import sha256_json
from .media.sampling import SamplingPolicy
from .paths import UnsafePathError, safe_name, safe_relpath
from .registry import SOURCES, ClassDef, Source

_TOP_KEYS = {"name", "version", "description", "seed", "sources", "dedup", "splits", "output"}
_SOURCE_KEYS = {"sampling", "probes", "classes", "crop", "input", "fps", "label", "ids", "text", "regions"}
# keys only a source that the registry does not know declares
_DECLARED_KEYS = {"organ", "probe", "licence", "description"}
INPUTS = ("video", "dicom", "image_sequence")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ID_MODES = ("path", "hash")
TEXT_ACTIONS = ("mask", "exclude", "warn", "off")
REGION_MODES = ("largest", "each")
_SPLIT_KEYS = {"kind", "k", "validation", "group", "group_column", "inherit"}
#: where a packaged recipe is found by name (`us4 build pocus ...`)
RECIPES_PACKAGE = "us4.pipelines"


@dataclass(frozen=True)
class CropSpec:
    """`auto`: the scanner's 2D tissue region where a DICOM file declares one, else the scan
    region detected per clip; `none` keeps the full frame; `box` is `[x, y, w, h]` for every
    clip of the source. `clips` overrides per clip, keyed by its path relative to the raw
    folder, or by its content sha256 (the only key a source with `ids: hash` may use: the
    recipe is published in the lock)."""

    mode: str = "auto"
    box: tuple[int, int, int, int] | None = None
    clips: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()

    def for_clip(self, rel_path: str, sha256: str) -> dict:
        """The crop that applies to one clip, as a small dict (part of its cache key)."""
        for key, box in self.clips:
            if key in (rel_path, sha256):
                return {"mode": "box", "box": list(box)}
        if self.mode == "box":
            return {"mode": "box", "box": list(self.box)}
        return {"mode": self.mode}

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.clips:
            out["clips"] = {p: list(b) for p, b in self.clips}
        return out


@dataclass(frozen=True)
class LabelSpec:
    """How a clip gets its class: `registry` (file-name prefix, and for POCUS its metadata
    sheet), `prefix` (file-name prefix = class name), `constant` (one class for every clip)
    or `sheet` (a CSV in the raw folder: `key_column` holds a clip's path or content sha256,
    `column` its class)."""

    kind: str
    constant: str | None = None
    sheet: str | None = None
    key: str = "path"
    key_column: str | None = None
    column: str | None = None

    def to_dict(self) -> dict:
        if self.kind == "registry":
            return {"registry": True}
        if self.kind == "prefix":
            return {"prefix": True}
        if self.kind == "constant":
            return {"constant": self.constant}
        return {"sheet": self.sheet, "key": self.key, "key_column": self.key_column or self.key,
                "column": self.column}


@dataclass(frozen=True)
class SourceRecipe:
    name: str
    definition: Source  # the registry's entry, or one built from the recipe's declaration
    declared: bool  # declared in the recipe, not in the registry
    sampling: SamplingPolicy
    input: str = "video"
    fps: float | None = None  # image sequences, and DICOM files without timing
    ids: str = "path"  # video ids from paths, or from content hashes (no path reaches the release)
    text: str = "warn"  # what a clip with burned-in text gets: mask, exclude, warn; off: no check at all
    label: LabelSpec = field(default_factory=lambda: LabelSpec("registry"))
    regions: str = "largest"  # DICOM with several 2D regions: the largest, or each as its own clip
    probes: tuple[str, ...] | None = None  # None: every probe
    classes: tuple[str, ...] | None = None  # registry sources: None = every class
    crop: CropSpec = field(default_factory=CropSpec)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"sampling": self.sampling.to_dict(), "crop": self.crop.to_dict(),
                               "input": self.input, "ids": self.ids, "text": self.text,
                               "label": self.label.to_dict(), "regions": self.regions}
        if self.fps is not None:
            out["fps"] = self.fps
        if self.probes is not None:
            out["probes"] = list(self.probes)
        if self.declared:
            d = self.definition
            out.update({"organ": d.organ, "probe": d.probe, "licence": d.licence, "description": d.description,
                        "classes": [c.name for c in d.classes]})
        elif self.classes is not None:
            out["classes"] = list(self.classes)
        return out


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str
    seed: int
    sources: dict[str, SourceRecipe]
    dedup_threshold: float  # mean absolute grey-level difference; 0 keeps every frame
    splits: dict  # {"kind": "folds", "k": 5, ...} or {"kind": "holdout", "validation": 0.2, ...}
    png_compress_level: int
    shard_max_bytes: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "seed": self.seed,
            "sources": {n: s.to_dict() for n, s in sorted(self.sources.items())},
            "dedup": {"threshold": self.dedup_threshold},
            "splits": dict(self.splits),
            "output": {"png_compress_level": self.png_compress_level,
                       "shard_max_mb": self.shard_max_bytes / 2**20},
        }

    @property
    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    def clip_params(self, source: str, rel_path: str, sha256: str) -> dict:
        """Everything in the recipe that shapes one clip's frames (part of its cache key)."""
        src = self.sources[source]
        return {
            "input": src.input,
            "fps": src.fps,
            "sampling": src.sampling.to_dict(),
            "crop": src.crop.for_clip(rel_path, sha256),
            "regions": src.regions,
            "text": src.text,
            "dedup": self.dedup_threshold,
            "png_compress_level": self.png_compress_level,
        }


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file by path, or by name among the recipes us4 ships (`pocus`, `us4`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if "/" not in str(name_or_path) and not str(name_or_path).endswith((".yaml", ".yml")):
        from importlib.resources import files

        packaged = files(RECIPES_PACKAGE) / f"{name_or_path}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    shipped = ", ".join(sorted(p.name.removesuffix(".yaml") for p in packaged_recipes()))
    raise RecipeError(f"{name_or_path}: no such recipe file, nor a recipe us4 ships (those are: {shipped})")


def packaged_recipes() -> list[Path]:
    from importlib.resources import files

    root = files(RECIPES_PACKAGE)
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(path: str | Path) -> Recipe:
    path = find_recipe(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc})") from None
    return parse_recipe(raw, where=str(path))


def parse_recipe(raw: Any, where: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a mapping with keys {sorted(_TOP_KEYS)}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "version", "sources"):
        if key not in raw:
            raise RecipeError(f"{where}: missing required key {key!r}")
    if not isinstance(raw["sources"], dict) or not raw["sources"]:
        raise RecipeError(f"{where}: 'sources' must map at least one source name to its settings")
    try:
        name, version = safe_name(str(raw["name"]), "name"), safe_name(str(raw["version"]), "version")
        sources = {safe_name(n, "source"): _parse_source(n, s, where) for n, s in raw["sources"].items()}
    except UnsafePathError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    splits = _parse_splits(raw.get("splits", {"kind": "holdout", "validation": 0.2}), where)
    dedup = raw.get("dedup", {}) or {}
    output = raw.get("output", {}) or {}
    try:
        threshold = float(dedup.get("threshold", 1.0))
        level = int(output.get("png_compress_level", 1))
        shard_mb = float(output.get("shard_max_mb", 256))
        seed = int(raw.get("seed", 0))
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecipeError(f"{where}: {exc}") from None
    if not 0 <= level <= 9:
        raise RecipeError(f"{where}: output.png_compress_level must be 0..9, got {level}")
    if threshold < 0 or shard_mb <= 0:
        raise RecipeError(f"{where}: dedup.threshold must be >= 0 and output.shard_max_mb > 0")
    return Recipe(
        name=name,
        version=version,
        description=str(raw.get("description", "")).strip(),
        seed=seed,
        sources=sources,
        dedup_threshold=threshold,
        splits=splits,
        png_compress_level=level,
        shard_max_bytes=int(shard_mb * 2**20),
    )


def _choice(raw: dict, key: str, allowed: tuple[str, ...], default: str, name: str, where: str) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise RecipeError(f"{where}: source {name!r}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _parse_source(name: str, raw: Any, where: str) -> SourceRecipe:
    if not isinstance(raw, dict) or "sampling" not in raw:
        raise RecipeError(f"{where}: source {name!r} needs a 'sampling' policy")
    declared = name not in SOURCES
    allowed = _SOURCE_KEYS | (_DECLARED_KEYS if declared else set())
    unknown = set(raw) - allowed
    if unknown:
        hint = (f" (keys {sorted(_DECLARED_KEYS & unknown)} declare a source the registry does not know; "
                f"{name!r} is in the registry)" if _DECLARED_KEYS & unknown else "")
        raise RecipeError(f"{where}: source {name!r}: unknown keys {sorted(unknown)}{hint}")
    try:
        sampling = SamplingPolicy.from_dict(raw["sampling"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecipeError(f"{where}: source {name!r}: sampling: {exc}") from None
    definition = _declare(name, raw, where) if declared else SOURCES[name]
    kind = _choice(raw, "input", INPUTS, definition.input, name, where)
    video = kind == "video"
    ids = _choice(raw, "ids", ID_MODES, "path" if video else "hash", name, where)
    if raw.get("text") is False:  # YAML 1.1 reads a bare `off` as false
        raw = {**raw, "text": "off"}
    text = _choice(raw, "text", TEXT_ACTIONS, "warn" if video else "mask", name, where)
    regions = _choice(raw, "regions", REGION_MODES, "largest", name, where)
    fps = raw.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < 10_000):
        raise RecipeError(f"{where}: source {name!r}: fps must be a positive number of frames per second, got {fps!r}")
    if kind == "image_sequence" and fps is None:
        raise RecipeError(f"{where}: source {name!r}: image sequences carry no frame rate; state it with fps: N")
    classes = None
    known_classes = {c.name for c in definition.classes}
    if not declared and raw.get("classes") is not None:
        bad = set(_strings(raw["classes"], f"source {name!r}: classes", where)) - known_classes
        if bad:
            raise RecipeError(f"{where}: source {name!r}: unknown classes {sorted(bad)}; known: {sorted(known_classes)}")
        classes = tuple(raw["classes"])
    label = _parse_label(name, raw.get("label"), declared, known_classes, where)
    probes = None
    if raw.get("probes") is not None:
        probes = tuple(_strings(raw["probes"], f"source {name!r}: probes", where))
        if definition.probe_folders and set(probes) - set(definition.probe_folders):
            raise RecipeError(f"{where}: source {name!r}: unknown probes {sorted(set(probes) - set(definition.probe_folders))}"
                              f"; known: {list(definition.probe_folders)}")
    crop = _parse_crop(name, raw.get("crop"), where)
    if ids == "hash" and any(not _SHA256.match(key) for key, _ in crop.clips):
        raise RecipeError(f"{where}: source {name!r}: its ids are content hashes, so its crop overrides are keyed by the "
                          "clip's sha256, never by a path (the recipe is published in the release's lock)")
    return SourceRecipe(name, definition, declared, sampling, kind, float(fps) if fps is not None else None, ids,
                        text, label, regions, probes, classes, crop)


def _declare(name: str, raw: dict, where: str) -> Source:
    """A Source from a recipe's declaration of a source the registry does not know."""
    missing = [k for k in ("organ", "classes", "label") if k not in raw]
    if missing:
        known = ", ".join(SOURCES)
        raise RecipeError(f"{where}: unknown source {name!r}: neither in the registry ({known}) nor declared "
                          f"(a declared source needs {', '.join(missing)})")
    classes = raw["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes) \
            or len(set(classes)) != len(classes):
        raise RecipeError(f"{where}: source {name!r}: classes must be a list of distinct class names")
    return Source(
        name=name, corpus="declared in the recipe", organ=str(raw["organ"]), probe=str(raw.get("probe", "unknown")),
        classes=tuple(ClassDef(c, (c,)) for c in classes),
        licence=str(raw.get("licence", "not stated in the recipe")), citation="",
        description=str(raw.get("description", f"{name}: declared in the recipe")), public=False,
        input=str(raw.get("input", "video")),
    )


def _parse_label(name: str, raw: Any, declared: bool, classes: set[str], where: str) -> LabelSpec:
    if raw is None:
        return LabelSpec("registry" if not declared else "prefix")
    if not isinstance(raw, dict) or len(raw) == 0:
        raise RecipeError(f"{where}: source {name!r}: label must be {{constant: CLASS}}, {{prefix: true}} or "
                          "{sheet: FILE, key: path|sha256, column: NAME}")
    if raw.get("registry") is True and len(raw) == 1 and not declared:
        return LabelSpec("registry")
    if raw.get("prefix") is True and len(raw) == 1:
        return LabelSpec("prefix")
    if "constant" in raw and len(raw) == 1:
        if raw["constant"] not in classes:
            raise RecipeError(f"{where}: source {name!r}: label constant {raw['constant']!r} is not one of its "
                              f"classes {sorted(classes)}")
        return LabelSpec("constant", constant=raw["constant"])
    if "sheet" in raw:
        unknown = set(raw) - {"sheet", "key", "key_column", "column"}
        if unknown or "column" not in raw:
            raise RecipeError(f"{where}: source {name!r}: a sheet label is {{sheet: FILE, key: path|sha256, "
                              f"column: NAME[, key_column: NAME]}}" + (f"; unknown keys {sorted(unknown)}" if unknown else ""))
        key = raw.get("key", "path")
        if key not in ("path", "sha256"):
            raise RecipeError(f"{where}: source {name!r}: label key must be path or sha256, got {key!r}")
        try:
            sheet = safe_relpath(str(raw["sheet"]), "label sheet")
        except UnsafePathError as exc:
            raise RecipeError(f"{where}: source {name!r}: {exc} (the sheet lies in the source's raw folder)") from None
        return LabelSpec("sheet", sheet=sheet, key=key, key_column=str(raw.get("key_column", key)),
                         column=str(raw["column"]))
    raise RecipeError(f"{where}: source {name!r}: label must be {{constant: CLASS}}, {{prefix: true}} or "
                      f"{{sheet: FILE, key: path|sha256, column: NAME}}, got {raw!r}")


def _parse_crop(name: str, raw: Any, where: str) -> CropSpec:
    if raw is None:
        return CropSpec()
    if isinstance(raw, str):
        raw = {"mode": raw}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: source {name!r}: crop must be auto, none, or {{box: [x, y, w, h]}}")
    mode = raw.get("mode", "box" if "box" in raw else "auto")
    if mode not in ("auto", "none", "box"):
        raise RecipeError(f"{where}: source {name!r}: crop mode must be auto, none or box")
    box = _box(raw.get("box"), name, where) if mode == "box" else None
    if mode == "box" and box is None:
        raise RecipeError(f"{where}: source {name!r}: crop mode 'box' needs box: [x, y, w, h]")
    overrides = raw.get("clips") or {}
    if not isinstance(overrides, dict):
        raise RecipeError(f"{where}: source {name!r}: crop clips map a clip's path (or sha256) to [x, y, w, h]")
    try:
        clips = tuple(sorted((safe_relpath(str(p), "crop override"), _box(b, name, where)) for p, b in overrides.items()))
    except UnsafePathError as exc:
        raise RecipeError(f"{where}: source {name!r}: {exc}") from None
    return CropSpec(mode, box, clips)


def _strings(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RecipeError(f"{where}: {what} must be a list of names, got {value!r}")
    return value


def _box(raw: Any, name: str, where: str) -> tuple[int, int, int, int] | None:
    if raw is None:
        return None
    if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and all(isinstance(v, int) for v in raw)
            and raw[2] > 0 and raw[3] > 0 and raw[0] >= 0 and raw[1] >= 0):
        raise RecipeError(f"{where}: source {name!r}: a crop box is [x, y, w, h] in whole pixels, got {raw!r}")
    return tuple(raw)


def _parse_splits(splits: Any, where: str) -> dict:
    if not isinstance(splits, dict):
        raise RecipeError(f"{where}: splits must be a mapping (kind: folds|holdout, ...)")
    unknown = set(splits) - _SPLIT_KEYS
    if unknown:
        raise RecipeError(f"{where}: splits: unknown keys {sorted(unknown)}; known: {sorted(_SPLIT_KEYS)}")
    kind = splits.get("kind")
    if kind == "folds":
        if not isinstance(splits.get("k"), int) or splits["k"] < 2:
            raise RecipeError(f"{where}: splits.k must be a whole number >= 2")
    elif kind == "holdout":
        v = splits.get("validation")
        if not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise RecipeError(f"{where}: splits.validation must be a fraction in [0, 1)")
    else:
        raise RecipeError(f"{where}: splits.kind must be 'folds' (with k) or 'holdout' (with validation)")
    if splits.get("group") not in (None, "near_duplicates"):
        raise RecipeError(f"{where}: splits.group must be near_duplicates, got {splits['group']!r}")
    column = splits.get("group_column")
    if column is not None and not ((isinstance(column, str) and column) or (
            isinstance(column, list) and column and all(isinstance(c, str) and c for c in column))):
        raise RecipeError(f"{where}: splits.group_column names a column of the source's sheet, or a list of "
                          "columns whose values together make the key (e.g. [Source ID, Patient ID / Name])")
    if "inherit" in splits:
        try:  # recorded in the lock: a manifest us4 ships, or a path relative to the recipe, never a local absolute one
            safe_relpath(splits["inherit"], "splits.inherit")
        except UnsafePathError as exc:
            raise RecipeError(f"{where}: {exc} (name a manifest us4 ships, or a lock beside the recipe; "
                              "use --previous for any other)") from None
    return dict(splits)
