"""Paths read from a lock, a recipe or a server are data, not trust (a leaf module).

Every such path is checked here before it is joined to a folder: relative, POSIX
separators, no `..`, no drive, no NUL, no component that starts with a dot (`.git/config`
must never be written by a publish, nor `.cache/...` fetched), no glob characters
(downloads and uploads pass paths on as patterns), and once joined and resolved still
inside the folder (a symlink cannot lead out either).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import Us4Error

_DRIVE = re.compile(r"^[A-Za-z]:")
# Names that end up as one path component (sources, splits, configs, tags): letters,
# digits, and `_.-+` inside, never a leading dot.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_GLOB = re.compile(r"[*?\[\]]")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class UnsafePathError(Us4Error, ValueError):
    """A path or name from a file or a server would reach outside its folder."""


def safe_relpath(value: object, what: str = "path") -> str:
    """`value` as a normalised relative POSIX path, or UnsafePathError saying why not.

    >>> safe_relpath("data/frames/fold0-00000-of-00001.parquet")
    'data/frames/fold0-00000-of-00001.parquet'
    >>> safe_relpath("../outside/x.parquet")
    Traceback (most recent call last):
    us4.paths.UnsafePathError: ...
    """
    if not isinstance(value, str):
        raise UnsafePathError(f"{what} {value!r}: not a string")
    problem = _path_problem(value)
    if problem:
        raise UnsafePathError(f"{what} {value!r}: {problem}; a path here must be relative and stay inside its folder")
    return value


def _path_problem(value: str) -> str | None:
    if not value:
        return "empty"
    if "\0" in value:
        return "contains a NUL byte"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/") or _DRIVE.match(value):
        return "absolute"
    parts = value.split("/")
    if any(p == "" for p in parts):
        return "has an empty component"
    if any(p.startswith(".") for p in parts):
        return "has a component that starts with a dot ('.', '..', or a hidden name)"
    if _GLOB.search(value):
        return "contains a glob character (* ? [ ])"
    return None


def inside(root: str | Path, rel: str, what: str = "path") -> Path:
    """`root / rel` after checking `rel`, and proving the resolved result stays under `root`."""
    root = Path(root)
    target = root / safe_relpath(rel, what)
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise UnsafePathError(f"{what} {rel!r}: leads outside {root} (through a link)")
    return target


def safe_name(value: object, what: str = "name") -> str:
    """One path component: a source, split, config or tag name."""
    if not isinstance(value, str) or not _NAME.match(value) or value.endswith("."):
        raise UnsafePathError(f"{what} {value!r}: use letters, digits and _ . - only, not starting with a dot")
    return value


def safe_commit(value: object, what: str = "commit") -> str:
    """A full 40-hex git commit id, as a server must report it."""
    if not isinstance(value, str) or not _COMMIT.match(value):
        raise UnsafePathError(f"{what} {value!r}: not a 40-character hexadecimal commit id")
    return value
