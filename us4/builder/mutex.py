"""One build at a time per output folder: an advisory lock file in the build's work folder.

The kernel drops the lock when its holder dies (even by kill -9), so a crashed build
never blocks the next one, while two builds started into one `--out` can never
interleave: the second is refused with one line. Only the build's own process holds the
lock: a process it forks (a worker) closes its copy at once, so that none can keep the lock
of a dead build. The file names the holder (`PID HOST`) until its build ends: a build that
finds a name there takes over from one that was killed, and says so.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from ..errors import BuildError

LOCK_FILE = "build.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    # flock belongs to the open file, which a fork shares: a worker holding its copy would
    # keep the lock after the build's death
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class BuildMutex:
    def __init__(self, work_dir: Path, out: Path, notes: bool = False):
        self.path = work_dir / LOCK_FILE
        self.out = out
        self.notes = notes  # say on stderr when this build takes over from one that ended without finishing
        self._fd: int | None = None

    def __enter__(self) -> BuildMutex:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                if holder is not None and holder[1] == socket.gethostname() and not _alive(int(holder[0])):
                    raise BuildError(f"--out {self.out}: the build of process {holder[0]} into this folder ended, "
                                     f"yet processes it started still hold its lock {self.path}: end them, then run "
                                     "again") from None
                raise BuildError(f"--out {self.out}: another us4 build (process {holder[0] if holder else '?'}) is "
                                 "writing into this folder; wait for it to finish, or build into another folder"
                                 ) from None
            except OSError as exc:  # e.g. Lustre mounted without -o flock
                os.close(fd)
                raise BuildError(f"--out {self.out}: cannot lock {self.path} ({exc.strerror}): the file system "
                                 "does not support locks, which keep two builds apart (Lustre: mount with -o flock)"
                                 ) from None
            # A finished build removes its work folder, lock file included: if the file we
            # locked is no longer the one at the path, lock the new one instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        _HELD.add(fd)
        left = _holder(fd)
        if left is not None and self.notes:
            print(f"note: the build of process {left[0]} into this folder ended without finishing; resuming its "
                  "work", file=sys.stderr)
        _record(fd, f"{os.getpid()} {socket.gethostname()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            _record(self._fd, "")  # this build ended here: nobody takes over from it
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> tuple[str, str] | None:
    """(pid, host) the lock file names, or None when it names no build."""
    words = os.pread(fd, 300, 0).decode(errors="replace").split()
    if not words or not (words[0].isascii() and words[0].isdigit() and 0 < len(words[0]) <= 10 and int(words[0])):
        return None
    return words[0], words[1] if len(words) > 1 else socket.gethostname()  # an older us4 wrote the pid alone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def _record(fd: int, holder: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
