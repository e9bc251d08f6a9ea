"""A recipe file -> a validated, hashable `Recipe`.

A recipe declares everything a release's bytes depend on besides the clips and the
library versions: which sources (from the registry, or declared in the recipe itself),
in what raw form they come, how clips are named and labelled, how frames are sampled,
cropped and cleaned of burned-in text, how near-duplicates are dropped, how videos are
split, and how shards are encoded. `Recipe.to_dict()` states every default explicitly,
so the copy in a release's lock says exactly what was done.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from fractions import Fraction
from typing import Any, ClassVar

import yaml

from .contract.schema import FACT_TYPES, TRAIN, VALIDATION, VIDEO_FIELDS, fold_name, fold_of
from .errors import RecipeError
from .hashing import sha256_json
from .media.sampling import SamplingPolicy
from .paths import UnsafePathError, safe_commit, safe_name, safe_relpath
from .registry import SOURCES, ClassDef, Source

_TOP_KEYS = {"name", "version", "description", "seed", "sources", "dedup", "splits", "output"}
_SOURCE_KEYS = {"sampling", "probes", "classes", "crop", "input", "fps", "label", "ids", "text", "regions",
                "max_frame_pixels", "fetch", "facts", "clips"}
# keys only a source that the registry does not know declares
_DECLARED_KEYS = {"organ", "probe", "licence", "description"}
INPUTS = ("video", "dicom", "image_sequence")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ID_MODES = ("path", "hash")
TEXT_ACTIONS = ("mask", "exclude", "warn", "off")
REGION_MODES = ("largest", "each")
#: what joins clips into one unit of the split rule, besides a sheet column (`group_column`)
NEAR_DUPLICATES = "near_duplicates"
#: where a packaged recipe is found by name (`us4 build pocus ...`)
RECIPES_PACKAGE = "us4.pipelines"

# Bounds on what a recipe may hold. It is published in every lock and card, and a worker
# allocates by its numbers, so each value has a type and a size. The shipped recipes are
# under 2 KB; 1 MiB leaves room for some 10,000 per-clip crop overrides. YAML aliases are
# allowed (one sampling block shared by four sources), but count at their expanded size:
# the lock writes the recipe out in full, so an alias of an alias of ... (9 x 9 x ... items
# from 504 bytes) is refused before it is built.
MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 12  # the deepest setting, sources.NAME.crop.clips.PATH: [x, y, w, h], is 6 levels down
MAX_TEXT = 20_000  # characters of a description or a licence: a few paragraphs
MAX_STRING = 4_096  # characters of any other string: a name, a column, a path (PATH_MAX)
MAX_ITEMS = 100_000  # entries of one list or mapping
_TEXT_KEYS = ("description", "licence")
#: The default limit on a frame's size (max_frame_pixels), checked from the clip's header
#: before any frame is decoded: 4096 x 4096, twice a 4K screen capture, 14 times the largest
#: frame of the real clips at hand (1080 x 1080 in the POCUS sample; its DICOM files and the
#: BLUES clips are smaller). A worker holds a clip's kept frames at once, so this bounds its
#: memory per kept frame (about 3 bytes a pixel, grey and chroma). The recipe may raise it up
#: to 16384 x 16384.
DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096
MAX_FRAME_PIXELS = 16384 * 16384
#: what of a manifest `us4 fetch` checks a download against: the clips' hashes, the sheets' hashes
FETCH_CHECKS = ("clips", "sheets")
_FETCH_KEYS = {"git", "hub", "commit", "folder", "clips", "verify"}
# git transports a recipe may pin: never ext:: (runs a command) or a bare path of one machine
_GIT_URL = re.compile(r"^(https?|git|ssh|file)://[^\x00-\x20\x7f]+$")
#: folds are dealt unit by unit over every fold (units x k work); cross-validation uses 5 or 10
MAX_FOLDS = 100
#: what of a clip a sheet's key column may hold, besides a key a pattern takes from its path (`SheetKey`)
KEY_KINDS = ("path", "stem", "sha256")
#: fact columns of one source: each is a column of every videos row and a value of every clip in the lock
MAX_FACTS = 32
#: characters of a str fact: a comment of a few lines (the lock holds it once per clip)
MAX_FACT_CHARS = 2_000
#: a fact column's name: it becomes a Parquet, Croissant and Hub column name
_FACT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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
class SheetKey:
    """What of a clip meets a sheet's key column: its path relative to the raw folder, its file
    name without the suffix (`stem`), its content `sha256`, or (`pattern`) the first group of a
    regular expression searched in its path: `patient_(\\d+)_` joins a patient's row to each of
    that patient's clips."""

    kind: str = "path"
    pattern: str | None = None

    def of(self, rel: str, stem: str, sha256: str) -> str | None:
        """The clip's key, or None when its path does not match the pattern."""
        if self.kind == "pattern":
            match = re.search(self.pattern, rel)
            return match.group(1) if match else None
        return {"path": rel, "stem": stem, "sha256": sha256}[self.kind]

    def to_dict(self) -> str | dict:
        return {"pattern": self.pattern} if self.kind == "pattern" else self.kind

    def __str__(self) -> str:  # as in "the clip's ..."
        return "key from its path" if self.kind == "pattern" else self.kind


@dataclass(frozen=True)
class LabelSpec:
    """How a clip gets its class: `registry` (file-name prefix, and for POCUS its metadata
    sheet), `prefix` (file-name prefix = class name), `constant` (one class for every clip)
    or `sheet` (a CSV in the raw folder: the row whose `key_column` holds the clip's key, see
    `SheetKey`, gives its class in `column`)."""

    kind: str
    constant: str | None = None
    sheet: str | None = None
    key: SheetKey = field(default_factory=SheetKey)
    key_column: str | None = None
    column: str | None = None

    def to_dict(self) -> dict:
        if self.kind == "registry":
            return {"registry": True}
        if self.kind == "prefix":
            return {"prefix": True}
        if self.kind == "constant":
            return {"constant": self.constant}
        return {"sheet": self.sheet, "key": self.key.to_dict(), "key_column": self.key_column,
                "column": self.column}


@dataclass(frozen=True)
class FetchPin:
    """Where a public source's raw files are had, exactly (`us4 fetch`): a git repository at a
    commit, or a Hub dataset repository at a commit (a tag or a branch can move). `folder` is
    the repository's folder that `--raw SOURCE=` names (its sheets lie there), `clips` the one
    its clip ids are relative to (default: `folder`); `verify` says which of the manifest's files the fetch checks
    (a source whose manifest was built from another copy of its sheet checks its clips only)."""

    git: str | None = None
    hub: str | None = None
    commit: str = ""
    folder: str = "."
    clips: str = "."
    verify: tuple[str, ...] = FETCH_CHECKS

    def to_dict(self) -> dict:
        where = {"git": self.git} if self.git is not None else {"hub": self.hub}
        return {**where, "commit": self.commit, "folder": self.folder, "clips": self.clips,
                "verify": list(self.verify)}


@dataclass(frozen=True)
class FactColumn:
    """A column of the videos table taken from a sheet: its name there, the sheet's column, its type."""

    name: str
    column: str
    type: str  # a key of FACT_TYPES


@dataclass(frozen=True)
class FactsSpec:
    """Per-video facts: the row of `sheet` whose `key_column` holds the clip's key gives each
    fact column its typed value (null where the sheet has no row, or the cell is empty)."""

    sheet: str
    key: SheetKey
    key_column: str
    columns: tuple[FactColumn, ...]

    def to_dict(self) -> dict:
        # a list, not a mapping: the lock is written with sorted keys, and the columns keep the recipe's order
        return {"sheet": self.sheet, "key": self.key.to_dict(), "key_column": self.key_column,
                "columns": [{"name": c.name, "column": c.column, "type": c.type} for c in self.columns]}


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
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # a clip with larger frames fails at its probe
    probes: tuple[str, ...] | None = None  # None: every probe
    classes: tuple[str, ...] | None = None  # registry sources: None = every class
    crop: CropSpec = field(default_factory=CropSpec)
    facts: FactsSpec | None = None  # per-video facts from a sheet: typed columns of the videos table
    clips: str = "."  # the folder of the raw folder that holds the clips (sheets lie in the raw folder)
    fetch: FetchPin | None = None  # where its raw files are fetched from (`us4 fetch`); shapes no byte

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"sampling": self.sampling.to_dict(), "crop": self.crop.to_dict(),
                               "input": self.input, "ids": self.ids, "text": self.text,
                               "label": self.label.to_dict(), "regions": self.regions,
                               "max_frame_pixels": self.max_frame_pixels, "clips": self.clips}
        if self.fps is not None:
            out["fps"] = self.fps
        if self.probes is not None:
            out["probes"] = list(self.probes)
        if self.facts is not None:
            out["facts"] = self.facts.to_dict()
        if self.declared:
            d = self.definition
            out.update({"organ": d.organ, "probe": d.probe, "licence": d.licence, "description": d.description,
                        "classes": [c.name for c in d.classes]})
        elif self.classes is not None:
            out["classes"] = list(self.classes)
        if self.fetch is not None:
            out["fetch"] = self.fetch.to_dict()
        return out


@dataclass(frozen=True, kw_only=True)
class SplitRule:
    """What both kinds of split rule hold besides their shares: what joins clips into one unit
    (`builder.splits`), and the lock whose clips keep their split."""

    kind: ClassVar[str]
    group: str | None = None  # NEAR_DUPLICATES: clips sharing near-duplicate frames go to one split
    group_column: str | tuple[str, ...] | None = None  # the sheet's column, or columns whose values make one key
    inherit: str | None = None  # a manifest us4 ships, or a lock beside the recipe (--previous says the same)

    @property
    def near_duplicates(self) -> bool:
        return self.group == NEAR_DUPLICATES

    @property
    def group_columns(self) -> tuple[str, ...]:
        """The sheet's columns whose values, together, join clips (none: no sheet grouping)."""
        return (self.group_column,) if isinstance(self.group_column, str) else self.group_column or ()

    def fold(self, split: str) -> int | None:
        """The fold number of a split of this rule (None: a holdout has no folds)."""
        return None

    def to_dict(self) -> dict:
        shares = {k: v for k, v in vars(self).items() if k not in ("group", "group_column", "inherit")}
        column = list(self.group_column) if isinstance(self.group_column, tuple) else self.group_column
        rest = {"group": self.group, "group_column": column, "inherit": self.inherit}
        return {"kind": self.kind, **shares, **{k: v for k, v in rest.items() if v is not None}}


@dataclass(frozen=True, kw_only=True)
class Folds(SplitRule):
    """k folds fold0 .. fold{k-1}, each a k-th of every class. `weights`: 1 a fold."""

    kind: ClassVar[str] = "folds"
    k: int

    def weights(self) -> dict[str, int]:
        return {fold_name(i): 1 for i in range(self.k)}

    def fold(self, split: str) -> int | None:
        return fold_of(split)


@dataclass(frozen=True, kw_only=True)
class Holdout(SplitRule):
    """train and validation, the latter `validation` of each class (a fraction in [0, 1), as written)."""

    kind: ClassVar[str] = "holdout"
    validation: int | float

    def weights(self) -> dict[str, int]:
        """train and validation in the ratio of the validation fraction (0.2: 4 and 1). With no
        share (validation 0) the validation split is left out: nothing goes there."""
        v = Fraction(str(self.validation)).limit_denominator(10_000)
        return {TRAIN: 1} if v == 0 else {TRAIN: v.denominator - v.numerator, VALIDATION: v.numerator}


Splits = Folds | Holdout
_SPLIT_KINDS: dict[str, type[SplitRule]] = {"folds": Folds, "holdout": Holdout}
#: each kind's own keys (its shares), and the keys both kinds have
_SHARE_KEYS = {"folds": "k", "holdout": "validation"}
_RULE_KEYS = ("group", "group_column", "inherit")


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str
    seed: int
    sources: dict[str, SourceRecipe]
    dedup_threshold: float  # mean absolute grey-level difference; 0 keeps every frame
    splits: Splits
    png_compress_level: int
    shard_max_bytes: int
    # the recipe as a lock of an older us4 recorded it (that us4 stated fewer defaults), kept so the
    # lock is written back byte for byte; None: a recipe this us4 parsed from a file, or wrote
    recorded: dict | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "seed": self.seed,
            "sources": {n: s.to_dict() for n, s in sorted(self.sources.items())},
            "dedup": {"threshold": self.dedup_threshold},
            "splits": self.splits.to_dict(),
            "output": {"png_compress_level": self.png_compress_level,
                       "shard_max_mb": self.shard_max_bytes / 2**20},
        }

    def as_recorded(self) -> dict:
        """The recipe as its lock holds it: `to_dict()`, or as an older us4 wrote it."""
        return self.to_dict() if self.recorded is None else self.recorded

    @property
    def sha256(self) -> str:
        """The hash a lock states of its recipe (`recipe_sha256`)."""
        return sha256_json(self.as_recorded())

    def fact_fields(self) -> list[tuple[str, str]]:
        """(name, type) of every fact column of the videos table: by source name, each source's in
        its recipe order; a name two sources declare (with one type, as parsing checks) once."""
        return fact_fields(self.sources.values())

    def clip_params(self, source: str, rel_path: str, sha256: str) -> dict:
        """Everything in the recipe that shapes one clip's frames (part of its cache key)."""
        src = self.sources[source]
        return {
            "input": src.input,
            "fps": src.fps,
            "sampling": src.sampling.to_dict(),
            "crop": src.crop.for_clip(rel_path, sha256),
            "regions": src.regions,
            "max_frame_pixels": src.max_frame_pixels,
            "text": src.text,
            "dedup": self.dedup_threshold,
            "png_compress_level": self.png_compress_level,
            "thumbnails": self.splits.near_duplicates,
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
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: a recipe holds at most {MAX_RECIPE_BYTES:,} bytes, this file has {size:,}")
        raw = _load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe ({type(exc).__name__}: {str(exc)[:200]})") from None
    return parse_recipe(raw, where=str(path))


def _load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)`, once its event stream (which builds nothing) shows that it nests
    at most MAX_DEPTH levels deep and, every alias expanded, holds at most MAX_RECIPE_BYTES."""
    sizes: dict[str, int] = {}  # anchor -> the size of its value, expanded
    open_: list[list] = [[None, 0]]  # [anchor, size so far] of each collection being read
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_) > MAX_DEPTH:
                raise RecipeError(f"{where}: nested more than {MAX_DEPTH} levels deep "
                                  f"(line {event.start_mark.line + 1})")
            open_.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1 + len(event.value)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:  # inside the value it names: endless
                raise RecipeError(f"{where}: the YAML alias *{event.anchor:.40} on line {event.start_mark.line + 1} "
                                  "lies inside the value it names")
            anchor, size = None, sizes[event.anchor]
            if size + sum(s for _, s in open_) > MAX_RECIPE_BYTES:
                raise RecipeError(f"{where}: its YAML aliases expand it past {MAX_RECIPE_BYTES:,} bytes (line "
                                  f"{event.start_mark.line + 1}); the lock writes a recipe out in full: write "
                                  "the values out, or repeat less")
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        open_[-1][1] += size
    return yaml.safe_load(text)


def _check_bounds(raw: Any, where: str) -> None:
    """Every value of a recipe (from a file or from a lock) within the bounds above:
    depth, entries per list or mapping, characters per string, magnitude of numbers."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, at, depth = stack.pop()
        shown = at or "the recipe"
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise RecipeError(f"{where}: {shown}: nested more than {MAX_DEPTH} levels deep")
            if len(value) > MAX_ITEMS:
                raise RecipeError(f"{where}: {shown}: more than {MAX_ITEMS:,} entries")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and len(key) > MAX_STRING:
                    raise RecipeError(f"{where}: {shown}: a key of more than {MAX_STRING:,} characters")
                stack.append((item, f"{at}.{key}" if at else str(key), depth + 1))
        elif isinstance(value, str):
            limit = MAX_TEXT if at.rsplit(".", 1)[-1] in _TEXT_KEYS else MAX_STRING
            if len(value) > limit:
                raise RecipeError(f"{where}: {shown}: {len(value):,} characters; at most {limit:,}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}: {shown}: {value} is not a finite number")
        elif isinstance(value, int) and not -2**63 <= value < 2**63:
            raise RecipeError(f"{where}: {shown}: a whole number of more than 64 bits")


def _text(raw: dict, key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{where}: {key} must be text, got {type(value).__name__} (quote it)")
    return value


def _number(raw: dict, key: str, default: float, low: float, high: float, what: str, where: str,
            whole: bool = False) -> Any:
    """raw[key] (default `default`): a number in [low, high], a whole one if `whole`."""
    value = raw.get(key, default)
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise RecipeError(f"{where}: {what} must be a {'whole number' if whole else 'number'} from {low:,} to "
                          f"{high:,}, got {value!r:.40}")
    return value


def parse_recipe(raw: Any, where: str = "recipe", recorded: bool = False) -> Recipe:
    """A recipe from its YAML (or JSON) mapping; `recorded`: the mapping is as a lock holds it,
    and the recipe keeps it to be written back unchanged where this us4 would state it otherwise."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a mapping with keys {sorted(_TOP_KEYS)}")
    _check_bounds(raw, where)
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
    fact_fields(sources.values(), where)  # a fact column of two sources has one type
    splits = _parse_splits(raw.get("splits", {"kind": "holdout", "validation": 0.2}), where)
    dedup = raw.get("dedup", {}) or {}
    output = raw.get("output", {}) or {}
    for key, value in (("dedup", dedup), ("output", output)):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {key} must be a mapping")
    threshold = float(_number(dedup, "threshold", 1.0, 0, 255, "dedup.threshold (grey levels)", where))
    level = _number(output, "png_compress_level", 1, 0, 9, "output.png_compress_level", where, whole=True)
    # 50 GB: the largest file the Hub stores
    shard_mb = float(_number(output, "shard_max_mb", 256, 0.01, 50_000, "output.shard_max_mb", where))
    seed = _number(raw, "seed", 0, 0, 2**63 - 1, "seed", where, whole=True)
    recipe = Recipe(
        name=name,
        version=version,
        description=_text(raw, "description", "", where).strip(),
        seed=seed,
        sources=sources,
        dedup_threshold=threshold,
        splits=splits,
        png_compress_level=level,
        shard_max_bytes=int(shard_mb * 2**20),
    )
    if recorded and recipe.to_dict() != raw:
        return dataclasses.replace(recipe, recorded=raw)
    return recipe


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
    max_pixels = _number(raw, "max_frame_pixels", DEFAULT_MAX_FRAME_PIXELS, 1, MAX_FRAME_PIXELS,
                         f"source {name!r}: max_frame_pixels", where, whole=True)
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
    facts = _parse_facts(name, raw["facts"], where) if raw.get("facts") is not None else None
    clips = raw.get("clips", ".")
    try:
        if clips != ".":  # a repository's clip folder, beside its README and sheets (which are no clips)
            clips = safe_relpath(clips if isinstance(clips, str) else repr(clips), "clips folder")
    except UnsafePathError as exc:
        raise RecipeError(f"{where}: source {name!r}: {exc} (clips names a folder inside the raw folder)") from None
    return SourceRecipe(name, definition, declared, sampling, kind, float(fps) if fps is not None else None, ids,
                        text, label, regions, max_pixels, probes, classes, crop, facts, clips,
                        fetch=_parse_fetch(name, raw.get("fetch"), where))


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
    where = f"{where}: source {name!r}"
    return Source(
        name=name, corpus="declared in the recipe", organ=_text(raw, "organ", "", where),
        probe=_text(raw, "probe", "unknown", where), classes=tuple(ClassDef(c, (c,)) for c in classes),
        licence=_text(raw, "licence", "not stated in the recipe", where), citation="",
        description=_text(raw, "description", f"{name}: declared in the recipe", where), public=False,
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
            raise RecipeError(f"{where}: source {name!r}: a sheet label is {{sheet: FILE, key: {_KEY_FORMS}, "
                              f"column: NAME[, key_column: NAME]}}" + (f"; unknown keys {sorted(unknown)}" if unknown else ""))
        sheet, key, key_column = _sheet_join(name, "label", raw, where)
        return LabelSpec("sheet", sheet=sheet, key=key, key_column=key_column, column=_column(raw["column"], name, where))
    raise RecipeError(f"{where}: source {name!r}: label must be {{constant: CLASS}}, {{prefix: true}} or "
                      f"{{sheet: FILE, key: {_KEY_FORMS}, column: NAME}}, got {raw!r:.200}")


_KEY_FORMS = "path|stem|sha256|{pattern: REGEX}"


def _column(value: Any, name: str, where: str) -> str:
    """A sheet column's name as written (YAML reads a bare 2021 as a number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise RecipeError(f"{where}: source {name!r}: a sheet column is named by text, got {value!r:.60}")
    return str(value)


def _sheet_join(name: str, what: str, raw: dict, where: str) -> tuple[str, SheetKey, str]:
    """The sheet, the key and the key column of a label or facts block. The sheet lies in the raw
    folder; the key column is named like the key (path, stem, sha256) unless the block names it, as
    it must for a pattern, whose first group captures the key."""
    key = raw.get("key", "path")
    if isinstance(key, dict) and set(key) == {"pattern"}:
        pattern = key["pattern"]
        try:
            compiled = re.compile(pattern) if isinstance(pattern, str) and pattern else None
        except re.error as exc:
            raise RecipeError(f"{where}: source {name!r}: {what} key pattern {pattern!r:.80}: {exc}") from None
        if compiled is None or compiled.groups < 1:
            raise RecipeError(f"{where}: source {name!r}: {what} key pattern must be a regular expression with a "
                              f"group that captures the key, e.g. 'patient_(\\d+)_', got {pattern!r:.80}")
        if "key_column" not in raw:
            raise RecipeError(f"{where}: source {name!r}: a {what} key pattern needs key_column: the sheet's column "
                              "holding the captured key")
        key = SheetKey("pattern", pattern)
    elif key in KEY_KINDS:
        key = SheetKey(key)
    else:
        raise RecipeError(f"{where}: source {name!r}: {what} key must be {_KEY_FORMS}, got {key!r:.80}")
    try:
        sheet = safe_relpath(str(raw["sheet"]), f"{what} sheet")
    except UnsafePathError as exc:
        raise RecipeError(f"{where}: source {name!r}: {exc} (the sheet lies in the source's raw folder)") from None
    return sheet, key, _column(raw.get("key_column", key.kind), name, where)


def _parse_facts(name: str, raw: Any, where: str) -> FactsSpec:
    """`facts: {sheet: FILE, key: ..., key_column: NAME, columns: {NAME: {column: C, type: T}, ...}}`
    (columns may also be a list of {name, column, type}, as the lock writes them)."""
    form = (f"facts is {{sheet: FILE, key: {_KEY_FORMS}, key_column: NAME, columns: {{NAME: {{column: SHEET "
            f"COLUMN, type: {'|'.join(FACT_TYPES)}}}, ...}}}}")
    if not isinstance(raw, dict) or not {"sheet", "columns"} <= set(raw) or set(raw) - {"sheet", "key", "key_column",
                                                                                          "columns"}:
        raise RecipeError(f"{where}: source {name!r}: {form}")
    sheet, key, key_column = _sheet_join(name, "facts", raw, where)
    items = raw["columns"]
    if isinstance(items, dict):
        items = [{"name": n, **c} if isinstance(c, dict) else c for n, c in items.items()]
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise RecipeError(f"{where}: source {name!r}: {form}")
    if len(items) > MAX_FACTS:
        raise RecipeError(f"{where}: source {name!r}: {len(items)} fact columns; at most {MAX_FACTS}")
    reserved = {n for n, _ in VIDEO_FIELDS}
    columns: list[FactColumn] = []
    for item in items:
        fact = item.get("name")
        if set(item) - {"name", "column", "type"} or "column" not in item:
            raise RecipeError(f"{where}: source {name!r}: fact {fact!r:.60}: {{column: SHEET COLUMN, type: "
                              f"{'|'.join(FACT_TYPES)}}}, got {item!r:.120}")
        if not isinstance(fact, str) or not _FACT_NAME.match(fact):
            raise RecipeError(f"{where}: source {name!r}: fact name {fact!r:.60} must be lower-case letters, digits "
                              "and _ (at most 63, a letter first): it names a column of the videos table")
        if fact in reserved:
            raise RecipeError(f"{where}: source {name!r}: fact {fact!r} is a column the videos table has already; "
                              "name it otherwise")
        if fact in (c.name for c in columns):
            raise RecipeError(f"{where}: source {name!r}: fact {fact!r} is named twice")
        kind = item.get("type", "str")
        if kind not in FACT_TYPES:
            raise RecipeError(f"{where}: source {name!r}: fact {fact!r}: type must be one of "
                              f"{', '.join(FACT_TYPES)}, got {kind!r:.40}")
        columns.append(FactColumn(fact, _column(item["column"], name, where), kind))
    return FactsSpec(sheet, key, key_column, tuple(columns))


def fact_fields(sources: Iterable[SourceRecipe], where: str = "recipe") -> list[tuple[str, str]]:
    """(name, type) of the fact columns of the sources, by source name, each source's in its recipe
    order, a name shared by two sources once; RecipeError where two sources type one name apart."""
    fields: dict[str, tuple[str, str]] = {}  # name -> (type, source)
    for spec in sorted(sources, key=lambda s: s.name):
        for column in spec.facts.columns if spec.facts else ():
            kind, other = fields.setdefault(column.name, (column.type, spec.name))
            if kind != column.type:
                raise RecipeError(f"{where}: fact {column.name!r} is {kind} in source {other!r} and {column.type} in "
                                  f"source {spec.name!r}: one column of the videos table has one type")
    return [(n, kind) for n, (kind, _) in fields.items()]


def _parse_fetch(name: str, raw: Any, where: str) -> FetchPin | None:
    """`fetch: {git: URL, commit: SHA}` or `{hub: ORG/NAME, commit: SHA}`, with `folder`,
    `clips` (folders of the repository, default its root) and `verify` (clips, sheets)."""
    if raw is None:
        return None
    where = f"{where}: source {name!r}: fetch"
    shape = "{git: URL, commit: SHA} or {hub: ORG/NAME, commit: SHA}, with folder, clips and verify optional"
    if not isinstance(raw, dict) or ("git" in raw) == ("hub" in raw) or set(raw) - _FETCH_KEYS:
        unknown = sorted(set(raw) - _FETCH_KEYS) if isinstance(raw, dict) else []
        raise RecipeError(f"{where}: must be {shape}" + (f"; unknown keys {unknown}" if unknown else ""))
    try:
        commit = safe_commit(raw.get("commit"), "commit")
        folder = str(raw.get("folder", "."))
        clips = str(raw.get("clips", folder))
        for key, value in (("folder", folder), ("clips", clips)):
            if value != ".":
                safe_relpath(value, f"a folder of the repository ({key})")
        if "hub" in raw:
            repo = raw["hub"]
            if not isinstance(repo, str) or repo.count("/") != 1:
                raise RecipeError(f"{where}: hub names a dataset repository as ORG/NAME, got {repo!r:.80}")
            for part in repo.split("/"):
                safe_name(part, "hub repository")
        elif not isinstance(raw["git"], str) or not _GIT_URL.match(raw["git"]):
            raise RecipeError(f"{where}: git must be an https://, http://, git://, ssh:// or file:// URL, "
                              f"got {raw['git']!r:.80}")
    except UnsafePathError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    checks = raw.get("verify", list(FETCH_CHECKS))
    if not isinstance(checks, list) or not checks or not set(checks) <= set(FETCH_CHECKS) \
            or len(set(checks)) != len(checks):
        raise RecipeError(f"{where}: verify lists what of the manifest the fetch checks: some of "
                          f"{', '.join(FETCH_CHECKS)}, got {checks!r:.80}")
    return FetchPin(git=raw.get("git"), hub=raw.get("hub"), commit=commit, folder=folder, clips=clips,
                    verify=tuple(c for c in FETCH_CHECKS if c in checks))


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


def _parse_splits(raw: Any, where: str) -> Splits:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: splits must be a mapping (kind: folds|holdout, ...)")
    known = {"kind", *_SHARE_KEYS.values(), *_RULE_KEYS}
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"{where}: splits: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    kind = raw.get("kind")
    if kind not in _SPLIT_KINDS:
        raise RecipeError(f"{where}: splits.kind must be 'folds' (with k) or 'holdout' (with validation)")
    for other, key in _SHARE_KEYS.items():  # a holdout given k would silently not be the folds it names
        if other != kind and key in raw:
            raise RecipeError(f"{where}: splits.{key} is a key of kind {other}, not {kind} (a {kind} split takes "
                              f"{_SHARE_KEYS[kind]})")
    if kind == "folds":
        share = _number(raw, "k", None, 2, MAX_FOLDS, "splits.k (folds)", where, whole=True)
    else:
        share = raw.get("validation")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise RecipeError(f"{where}: splits.validation must be a fraction in [0, 1)")
    if raw.get("group") not in (None, NEAR_DUPLICATES):
        raise RecipeError(f"{where}: splits.group must be {NEAR_DUPLICATES}, got {raw['group']!r}")
    column = raw.get("group_column")
    if column is not None and not ((isinstance(column, str) and column) or (
            isinstance(column, list) and column and all(isinstance(c, str) and c for c in column))):
        raise RecipeError(f"{where}: splits.group_column names a column of the source's sheet, or a list of "
                          "columns whose values together make the key (e.g. [Source ID, Patient ID / Name])")
    inherit = raw.get("inherit")
    if inherit is not None:
        try:  # recorded in the lock: a manifest us4 ships, or a path relative to the recipe, never a local absolute one
            safe_relpath(inherit, "splits.inherit")
        except UnsafePathError as exc:
            raise RecipeError(f"{where}: {exc} (name a manifest us4 ships, or a lock beside the recipe; "
                              "use --previous for any other)") from None
    return _SPLIT_KINDS[kind](**{_SHARE_KEYS[kind]: share}, group=raw.get("group"), inherit=inherit,
                              group_column=tuple(column) if isinstance(column, list) else column)
