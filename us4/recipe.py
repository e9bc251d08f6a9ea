"""A recipe file -> a validated, hashable `Recipe`.

A recipe declares everything a release's bytes depend on besides the clips and the
library versions: which sources, how frames are sampled and cropped, how
near-duplicates are dropped, how videos are split, and how shards are encoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .hashing import sha256_json
from .media.sampling import SamplingPolicy
from .registry import SOURCES

_TOP_KEYS = {"name", "version", "description", "seed", "sources", "dedup", "splits", "output"}
_SOURCE_KEYS = {"sampling", "probes", "classes", "crop"}


@dataclass(frozen=True)
class CropSpec:
    """`auto` detects the scan region per clip; `none` keeps the full frame; `box` is
    `[x, y, w, h]` for every clip of the source. `clips` overrides per clip path."""

    mode: str = "auto"
    box: tuple[int, int, int, int] | None = None
    clips: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()

    def for_clip(self, rel_path: str) -> dict:
        """The crop that applies to one clip, as a small dict (part of its cache key)."""
        for path, box in self.clips:
            if path == rel_path:
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
class SourceRecipe:
    name: str
    sampling: SamplingPolicy
    probes: tuple[str, ...] | None = None  # None: every probe
    classes: tuple[str, ...] | None = None  # None: every class of the source
    crop: CropSpec = field(default_factory=CropSpec)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"sampling": self.sampling.to_dict(), "crop": self.crop.to_dict()}
        if self.probes is not None:
            out["probes"] = list(self.probes)
        if self.classes is not None:
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
    splits: dict  # {"kind": "folds", "k": 5} or {"kind": "holdout", "validation": 0.2}
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

    def clip_params(self, source: str, rel_path: str) -> dict:
        """Everything in the recipe that shapes one clip's frames (its cache key)."""
        src = self.sources[source]
        return {
            "sampling": src.sampling.to_dict(),
            "crop": src.crop.for_clip(rel_path),
            "dedup": self.dedup_threshold,
            "png_compress_level": self.png_compress_level,
        }


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
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
    sources = {n: _parse_source(n, s, where) for n, s in raw["sources"].items()}
    splits = raw.get("splits", {"kind": "holdout", "validation": 0.2})
    _check_splits(splits, where)
    dedup = raw.get("dedup", {}) or {}
    output = raw.get("output", {}) or {}
    try:
        threshold = float(dedup.get("threshold", 1.0))
        level = int(output.get("png_compress_level", 1))
        shard_mb = float(output.get("shard_max_mb", 256))
        seed = int(raw.get("seed", 0))
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from None
    if not 0 <= level <= 9:
        raise RecipeError(f"{where}: output.png_compress_level must be 0..9, got {level}")
    if threshold < 0 or shard_mb <= 0:
        raise RecipeError(f"{where}: dedup.threshold must be >= 0 and output.shard_max_mb > 0")
    return Recipe(
        name=str(raw["name"]),
        version=str(raw["version"]),
        description=str(raw.get("description", "")).strip(),
        seed=seed,
        sources=sources,
        dedup_threshold=threshold,
        splits=splits,
        png_compress_level=level,
        shard_max_bytes=int(shard_mb * 2**20),
    )


def _parse_source(name: str, raw: Any, where: str) -> SourceRecipe:
    if name not in SOURCES:
        raise RecipeError(f"{where}: unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    if not isinstance(raw, dict) or "sampling" not in raw:
        raise RecipeError(f"{where}: source {name!r} needs a 'sampling' policy")
    unknown = set(raw) - _SOURCE_KEYS
    if unknown:
        raise RecipeError(f"{where}: source {name!r}: unknown keys {sorted(unknown)}")
    try:
        sampling = SamplingPolicy.from_dict(raw["sampling"])
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: source {name!r}: sampling: {exc}") from None
    known_classes = {c.name for c in SOURCES[name].classes}
    classes = raw.get("classes")
    if classes is not None:
        bad = set(classes) - known_classes
        if bad:
            raise RecipeError(f"{where}: source {name!r}: unknown classes {sorted(bad)}; "
                              f"known: {sorted(known_classes)}")
        classes = tuple(classes)
    probes = tuple(raw["probes"]) if raw.get("probes") is not None else None
    return SourceRecipe(name, sampling, probes, classes, _parse_crop(name, raw.get("crop"), where))


def _parse_crop(name: str, raw: Any, where: str) -> CropSpec:
    if raw is None:
        return CropSpec()
    if isinstance(raw, str):
        raw = {"mode": raw}
    mode = raw.get("mode", "box" if "box" in raw else "auto")
    if mode not in ("auto", "none", "box"):
        raise RecipeError(f"{where}: source {name!r}: crop mode must be auto, none or box")
    box = _box(raw.get("box"), name, where) if mode == "box" else None
    if mode == "box" and box is None:
        raise RecipeError(f"{where}: source {name!r}: crop mode 'box' needs box: [x, y, w, h]")
    clips = tuple(sorted((str(p), _box(b, name, where)) for p, b in (raw.get("clips") or {}).items()))
    return CropSpec(mode, box, clips)


def _box(raw: Any, name: str, where: str) -> tuple[int, int, int, int] | None:
    if raw is None:
        return None
    if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and all(isinstance(v, int) for v in raw)
            and raw[2] > 0 and raw[3] > 0 and raw[0] >= 0 and raw[1] >= 0):
        raise RecipeError(f"{where}: source {name!r}: a crop box is [x, y, w, h] in whole pixels, got {raw!r}")
    return tuple(raw)


def _check_splits(splits: Any, where: str) -> None:
    kind = splits.get("kind") if isinstance(splits, dict) else None
    if kind == "folds":
        if not isinstance(splits.get("k"), int) or splits["k"] < 2:
            raise RecipeError(f"{where}: splits.k must be a whole number >= 2")
    elif kind == "holdout":
        v = splits.get("validation")
        if not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise RecipeError(f"{where}: splits.validation must be a fraction in [0, 1)")
    else:
        raise RecipeError(f"{where}: splits.kind must be 'folds' (with k) or 'holdout' (with validation)")
