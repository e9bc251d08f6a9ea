"""Listing a folder tree in a fixed order, and the natural order of numbered frame names."""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["walk_files", "natural_key", "rel_posix"]

_DIGITS = re.compile(r"(\d+)")


def walk_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every file under `root`, sorted by its posix path relative to `root`; files and
    folders whose name starts with "." are skipped, and so is everything inside such a folder.

    Raises NotADirectoryError when `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    out: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                p = Path(folder) / name
                out.append((p.relative_to(root).as_posix(), p))
    return [p for _, p in sorted(out)]


def rel_posix(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """`path` relative to `root` in posix form; "." for `root` itself."""
    return Path(path).relative_to(root).as_posix()


def natural_key(name: str) -> tuple:
    """Sort key putting "frame2" before "frame10": digit runs compare as numbers.

    Ties between numerically equal names ("f1", "f01") are broken by the plain string,
    so the order is total and the same everywhere.
    """
    # split() alternates text and digit runs, so items at one position always compare alike.
    return tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(name))), name
