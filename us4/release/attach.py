"""Seal a release (its card, its Croissant description and their hashes in the lock), and
add files to a finished release (the contact sheet, a benchmark record): copied in, named
with their sha256 in the lock's `attachments`, and shown by the regenerated card."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..contract.card import CARD_FORMAT, render_card
from ..contract.croissant import CROISSANT_FORMAT, render_croissant
from ..contract.lock import (
    CARD_NAME,
    CROISSANT_NAME,
    FORMAT_V1,
    LOCK_NAME,
    Generated,
    Lock,
    check_attachment_name,
    dump_lock,
)
from ..errors import ReleaseError
from ..files import atomic_write
from ..paths import inside
from .read import Release


def seal(root: Path, lock: Lock, pending: dict[str, bytes] | None = None) -> Release:
    """Render the card and croissant.json from `lock`, then write `pending` files (name ->
    bytes: attachments not yet in the folder), the card and croissant.json, and last the lock
    with their sha256 and format numbers (it is the commit point). Everything is rendered
    before anything is written, so a record the card cannot show damages nothing."""
    pending = pending or {}
    card = render_card(lock, lambda name: pending[name] if name in pending else inside(root, name).read_bytes()).encode()
    croissant = render_croissant(lock)
    for name, data in pending.items():
        target = inside(root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    atomic_write(root / CARD_NAME, card)
    atomic_write(root / CROISSANT_NAME, croissant)
    generated = {CARD_NAME: Generated(format=CARD_FORMAT, sha256=hashlib.sha256(card).hexdigest()),
                 CROISSANT_NAME: Generated(format=CROISSANT_FORMAT, sha256=hashlib.sha256(croissant).hexdigest())}
    sealed = lock.model_copy(update={"generated": generated})
    atomic_write(root / LOCK_NAME, dump_lock(sealed))
    return Release(root, sealed)


def add_attachment(release: Release, path: str | Path, dest: str | None = None) -> Release:
    """Copy `path` into the release as `dest` (default: where it already lies inside the
    release, else its file name), record its sha256 in the lock, seal the release again.

    Returns the release with its new lock. Attaching a changed file under the same name
    replaces the entry. The release's data (shards, clips, splits) is untouched: its
    `data_sha256` stays the same.
    """
    if release.lock.source_format == FORMAT_V1:
        raise ReleaseError(f"{release.root}: built by us4 0.1.0 (lock {FORMAT_V1}); files cannot be attached to it "
                           "without rewriting its lock: rebuild it with this us4 first")
    src = Path(path)
    if not src.is_file():
        raise ReleaseError(f"{src}: no such file to attach")
    try:
        inside_as: str | None = src.resolve().relative_to(release.root.resolve()).as_posix()
    except ValueError:
        inside_as = None
    name = check_attachment_name(dest or inside_as or src.name)
    data = src.read_bytes()
    attachments = {**release.lock.attachments, name: hashlib.sha256(data).hexdigest()}
    return seal(release.root, release.lock.model_copy(update={"attachments": dict(sorted(attachments.items()))}),
                pending={name: data})
