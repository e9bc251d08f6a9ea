"""Training frames decoded once into a file on disk and memory-mapped by every later run.

A release's frames, decoded as `data.decode_png` decodes them (grey, squashed to S x S), are
written as raw uint8 (N x 1 x S x S) after a header of `HEADER_BYTES` that records the key:
the lock's sha256, S, the decoding and the rows of the frames table decoded. A run that finds
the file with its key maps it read-only (copy-on-write: the pages are the page cache's,
shared by every process of the node that maps it) and decodes nothing.

One process writes a file; the others wait on an flock of `NAME.lock` beside it (the ranks of a
node, concurrent runs) and then map it. The file is written under a temporary name, flushed
to disk and renamed into place, so a file with its name is complete; a stop (Ctrl-C, SIGTERM)
removes the temporary file, and one left by kill -9 is removed by the next writer of that key.
A file whose size or header does not match is rebuilt, with a line saying why.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StorageError, TrainError
from ..files import atomic_file, storage_errors
from ..version import __version__
from .progress import clock

Progress = Callable[[str], None]
FORMAT = "us4-frame-cache/1"
#: the header's room: a page, so the frames that follow it are mapped page-aligned
HEADER_BYTES = 4096
#: how frames are decoded (`data.decode_png`); part of the key, so a change of it makes new files
DECODING = "PIL convert L, resize S x S bilinear (squashed), uint8"
ENV = "US4_FRAME_CACHE"
_PROGRESS_EVERY_S = 5.0


def default_folder() -> Path:
    """$US4_FRAME_CACHE, else $XDG_CACHE_HOME/us4/frames, else ~/.cache/us4/frames."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "us4" / "frames"


@dataclass(frozen=True)
class CachedFrames:
    """A frame cache file a run used: where, how large, and whether this run wrote it."""

    path: Path
    frames: int
    size: int
    bytes: int
    reused: bool
    seconds: float  # to write it (or to find and map it)

    def describe(self) -> str:
        done = "reused" if self.reused else f"written in {self.seconds:.1f}s"
        return (f"frame cache {self.path}: {self.bytes / 1e6:,.1f} MB, {self.frames:,} frames at {self.size}px, "
                f"{done}")


def cache_key(lock_sha256: str, size: int, rows: np.ndarray) -> str:
    """What the file's frames depend on: the release (its lock), the size, the decoding, and the rows."""
    h = hashlib.sha256()
    for part in (FORMAT, lock_sha256, str(size), DECODING):
        h.update(part.encode() + b"\0")
    h.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
    return h.hexdigest()


def file_name(release: str, version: str, size: int, key: str) -> str:
    """NAME-VERSION-Spx-KEY.u8, the release's name and version reduced to safe characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{release}-{version}")[:80]
    return f"{stem}-{size}px-{key[:16]}.u8"


def _problem(path: Path, key: str, frames: int, size: int) -> str | None:
    """Why `path` is no complete cache file of this key (None: it is one)."""
    expected = HEADER_BYTES + frames * size * size
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            actual = os.fstat(f.fileno()).st_size
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    try:
        header = json.loads(head.rstrip(b" ").decode())
        found = header["key"] if header.get("format") == FORMAT else None
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, AttributeError):
        return "no header (an incomplete or foreign file)"
    if found != key:
        return "its header's key differs (another release, size or decoding)"
    if actual != expected:
        return f"{actual:,} bytes, {expected:,} expected (truncated or damaged)"
    return None


def _map(path: Path, frames: int, size: int) -> np.ndarray:
    # copy-on-write: file pages shared with the page cache; the trainer may index it like any array
    return np.memmap(path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=(frames, 1, size, size))


@contextlib.contextmanager
def _locked(folder: Path, lock: Path, say: Progress) -> Iterator[None]:
    """The key's flock, held for the block; a process that must wait says so, once."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StorageError(f"frame cache folder {folder}: cannot write there ({(exc.strerror or str(exc)).lower()}); "
                           f"choose another with --frame-cache or ${ENV}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"frame cache: waiting for {lock.with_suffix('').name}, which another process is writing")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, header: dict, chunks: Iterable[np.ndarray], say: Progress) -> None:
    """The frames, then the header, through `atomic_file`: a file with its name is complete."""
    frames = header["frames"]
    with atomic_file(path) as f:
        f.seek(HEADER_BYTES)
        start, done, last = time.perf_counter(), 0, time.perf_counter()
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=np.uint8).data)
            done += len(chunk)
            now = time.perf_counter()
            if now - last >= _PROGRESS_EVERY_S and done < frames:
                rate = done / (now - start)
                say(f"frame cache: {done:,}/{frames:,} frames, {rate:,.0f} frames/s; "
                    f"ETA {clock((frames - done) / rate)}")
                last = now
        if done != frames:
            raise TrainError(f"frame cache {path}: {done:,} frames decoded, {frames:,} expected")
        f.seek(0)
        f.write(json.dumps(header).encode().ljust(HEADER_BYTES, b" "))  # last: without it, the file is no cache


def cached_frames(folder: Path, *, release: str, version: str, lock_sha256: str, rows: np.ndarray, size: int,
                  decode: Callable[[np.ndarray], Iterable[np.ndarray]], say: Progress) -> tuple[np.ndarray, CachedFrames]:
    """The frames of `rows` (rows of the release's frames table, ascending) at `size`, mapped
    from the cache file of their key in `folder`; written first, from `decode(rows)` (uint8
    chunks N_k x 1 x S x S, in order), where no complete file is there."""
    start = time.perf_counter()
    rows = np.asarray(rows, dtype=np.int64)
    key = cache_key(lock_sha256, size, rows)
    path = folder / file_name(release, version, size, key)
    frames = len(rows)
    # the release's name is shown, not trusted: 512 ASCII characters (6 bytes each at most once JSON
    # escapes them) keep the header inside its page whatever the name holds
    shown = f"{release}@{version}".encode("ascii", "replace")[:512].decode("ascii")
    header = {"format": FORMAT, "key": key, "frames": frames, "size": size, "release": shown,
              "lock_sha256": lock_sha256, "decoding": DECODING, "us4": __version__}
    if _problem(path, key, frames, size) is None:  # the common case: complete, and no lock needed to read it
        return _map(path, frames, size), CachedFrames(path, frames, size, path.stat().st_size, True,
                                                      time.perf_counter() - start)
    with _locked(folder, folder / f"{path.name}.lock", say):
        problem = _problem(path, key, frames, size)
        reused = problem is None
        if not reused:
            if problem != "absent":
                say(f"frame cache {path}: {problem}; decoding it again")
            with storage_errors():
                for stale in folder.glob(f".{path.name}.*.tmp"):  # its writer was killed outright; we hold its key
                    stale.unlink(missing_ok=True)
                _write(path, header, decode(rows), say)
    return _map(path, frames, size), CachedFrames(path, frames, size, path.stat().st_size, reused,
                                                  time.perf_counter() - start)
