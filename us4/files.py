"""Atomic file writes, shared by the build's cache, the lock and attachments, and the folders
of files that stay with the holder of the raw data (a leaf module)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """Write beside the target, flush to disk, rename into place: a reader (or a run
    killed at any instant) sees the old file or the new one, never a partial one.
    `private`: readable by the owner alone (paths and text read from clinical clips)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if not private:  # mkstemp makes 0600; a release's files are read by others
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_dir(path: str | Path) -> Path:
    """A folder (and its parents) that only its owner can enter: where the files that may
    identify someone are kept."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it
