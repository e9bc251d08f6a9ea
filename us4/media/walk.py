"""Listing a folder tree in a fixed order, and the natural order of numbered frame names."""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listing", "list_files", "walk_files", "natural_key", "rel_posix"]

_DIGITS = re.compile(r"(\d+)")
_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


@dataclass(frozen=True)
class Listing:
    """The regular files under a root (links to one that stay inside the root count), and
    the entries that are never opened, with why: special files (a FIFO blocks its reader for
    good), links leading outside the root, broken links, folders that cannot be listed."""

    files: list[Path]
    refused: list[tuple[Path, str]]


def list_files(root: str | os.PathLike[str]) -> Listing:
    """Every entry under `root`, both lists sorted by posix path relative to `root`; files and
    folders whose name starts with "." are skipped, and so is everything inside such a folder.
    A link to a folder inside the root is not followed (its files are listed where they lie).

    Raises NotADirectoryError when `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    real_root = os.path.realpath(root)
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            refused.append((folder, f"a folder that cannot be listed ({exc.strerror})"))
            continue
        for entry in entries:
            kind, why = _look(entry, real_root)
            if kind == "folder":
                todo.append(Path(entry.path))
            elif kind == "file":
                files.append(Path(entry.path))
            elif why:
                refused.append((Path(entry.path), why))

    def by_rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    return Listing(sorted(files, key=by_rel), sorted(refused, key=lambda r: by_rel(r[0])))


def _look(entry: os.DirEntry, real_root: str) -> tuple[str, str]:
    """("file" | "folder" | "skip" | "refuse", why): from the directory entry and stat alone,
    never opening the entry."""
    try:
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                return "folder", ""
            if entry.is_file(follow_symlinks=False):
                return "file", ""
            return "refuse", f"{_special(entry.stat(follow_symlinks=False).st_mode)}, not a regular file"
        target = os.path.realpath(entry.path)
        if os.path.commonpath([real_root, target]) != real_root:
            return "refuse", "a link leading outside the raw folder, not followed (copy what it names into the folder)"
        mode = os.stat(entry.path).st_mode
    except OSError as exc:  # a broken link, a loop of links, an entry gone since listed
        what = "a link that cannot be followed" if entry.is_symlink() else "an entry that cannot be examined"
        return "refuse", f"{what} ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "skip", ""
    if stat.S_ISREG(mode):
        return "file", ""
    return "refuse", f"a link to {_special(mode)}, not a regular file"


def _special(mode: int) -> str:
    return next((name for test, name in _SPECIAL if test(mode)), "a special file")


def walk_files(root: str | os.PathLike[str]) -> list[Path]:
    """The regular files of `list_files(root)`."""
    return list_files(root).files


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
