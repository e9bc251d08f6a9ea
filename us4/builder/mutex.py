"""One build at a time per output folder: an advisory lock file in the build's work folder.

The kernel drops the lock when its holder dies (even by kill -9), so a crashed build
never blocks the next one, while two builds started into one `--out` can never
interleave: the second is refused with one line.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import BuildError

LOCK_FILE = "build.lock"


class BuildMutex:
    def __init__(self, work_dir: Path, out: Path):
        self.path = work_dir / LOCK_FILE
        self.out = out
        self._fd: int | None = None

    def __enter__(self) -> BuildMutex:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BuildError(f"--out {self.out}: another us4 build (process {holder}) is writing into this "
                                 "folder; wait for it to finish, or build into another folder") from None
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
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
