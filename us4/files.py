"""Atomic file writes, shared by the build's cache, the lock and attachments; the folders of
files that stay with the holder of the raw data; and the one line a failing disk gives."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import StorageError

# What to do about a storage failure; any other OSError is no fault of the storage.
_ADVICE = {
    errno.ENOSPC: "free space and run the same command again to resume",
    errno.EDQUOT: "free space (or raise the quota) and run the same command again to resume",
    errno.EFBIG: "the file system takes no file this large: use another one",
    errno.EROFS: "use a writable folder, or make this one writable and run the same command again to resume",
    errno.EACCES: "give yourself access, or use another folder",
    errno.EPERM: "give yourself access, or use another folder",
    errno.EIO: "the disk failed to read or write: check it, then run the same command again to resume",
}


def storage_error(exc: OSError) -> StorageError | None:
    """One line for a failure of the storage (full, read-only, not permitted, failing) naming
    the path and the cause, e.g. "/x/.us4-work/clips/ab.arrow: no space left on device
    (ENOSPC): free space and ..."; None for any other OSError."""
    advice = _ADVICE.get(exc.errno)
    if advice is None:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return StorageError(f"{where}{os.strerror(exc.errno).lower()} ({errno.errorcode[exc.errno]}): {advice}")


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turns a failure of the storage into its one line (`storage_error`); a decorator too."""
    try:
        yield
    except OSError as exc:
        problem = storage_error(exc)
        if problem is None:
            raise
        raise problem from None


@contextlib.contextmanager
def writing(target: str | Path, tmp: str | Path | None = None) -> Iterator[None]:
    """Around writing `target` through the temporary file `tmp` beside it: on any failure
    `tmp` is removed (a full disk keeps no half file), and an OSError that names no file, or
    names a temporary one (`.NAME.*`), names `target` (the one line it becomes says which
    file could not be written, also after crossing from a worker process)."""
    try:
        yield
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and (exc.filename is None or _temporary(exc.filename, Path(target))):
            exc.filename, exc.filename2 = str(target), None
        raise


def _temporary(name: object, target: Path) -> bool:
    return isinstance(name, str) and Path(name).parent == target.parent and Path(name).name.startswith(f".{target.name}.")


@contextlib.contextmanager
def atomic_file(path: str | Path, *, private: bool = False) -> Iterator[BinaryIO]:
    """A file opened for writing beside `path`, flushed to disk and renamed into place when the
    block ends: a reader (or a run killed at any instant) sees the old file or the new one,
    never a partial one; a failure or a stop removes it. `private`: readable by the owner alone
    (paths and text read from clinical clips)."""
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with writing(path, tmp):
        with os.fdopen(fd, "wb") as f:
            if not private:  # mkstemp makes 0600; a release's files are read by others
                os.fchmod(fd, 0o666 & ~_UMASK)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """`data` written through `atomic_file`."""
    with atomic_file(path, private=private) as f:
        f.write(data)


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
