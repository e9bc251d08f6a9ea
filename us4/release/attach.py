"""Files added to a finished release (the contact sheet, a benchmark record): copied in,
named with their sha256 in the lock's `attachments`, and shown by the regenerated card."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import ReleaseError
from ..files import atomic_write
from ..hashing import sha256_file
from .card import render_card
from .read import CARD_NAME, LOCK_NAME, Release, dump_lock

# Names the release itself owns: an attachment may not replace them, nor sit among the
# shards, where the configs' `data/...` patterns would read it as data.
_RESERVED = {CARD_NAME, LOCK_NAME}
_DATA = "data"


def add_attachment(release: Release, path: str | Path, dest: str | None = None) -> Release:
    """Copy `path` into the release as `dest` (default: where it already lies inside the
    release, else its file name), record its sha256 in the lock, regenerate the card.

    Returns the release with its new lock. Attaching a changed file under the same name
    replaces the entry; the lock is written before the card, each atomically.
    """
    src = Path(path)
    if not src.is_file():
        raise ReleaseError(f"{src}: no such file to attach")
    try:
        inside: str | None = src.resolve().relative_to(release.root.resolve()).as_posix()
    except ValueError:
        inside = None
    name = _check_name(dest or inside or src.name)
    target = release.root / name
    if inside != name:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, src.read_bytes())
    attachments = {**release.lock.get("attachments", {}), name: sha256_file(target)}
    updated = Release(release.root, {**release.lock, "attachments": dict(sorted(attachments.items()))})
    atomic_write(release.root / LOCK_NAME, dump_lock(updated.lock))
    atomic_write(release.root / CARD_NAME, render_card(updated).encode())
    return updated


def _check_name(name: str) -> str:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ReleaseError(f"{name}: an attachment's name is a relative path inside the release")
    if name in _RESERVED or pure.parts[0] == _DATA or pure.parts[0].startswith("."):
        raise ReleaseError(f"{name}: reserved for the release's own files; attach it under another name")
    return pure.as_posix()
