"""The one gate between a clip's problems and ours, and the checks at every decoder's door.

A clip's own problem (missing, empty, unreadable, truncated, unsupported, bytes a library
chokes on) is a `MediaError`: the build records it in the failure ledger and goes on. Ours
is anything else: this machine failing (no memory, a full or failing disk, no permission,
no file handles left) or a bug in us4. It stops the build with one line, and nothing of the
clip is cached, so the next run retries it.

Two seams decide, both here: decoders call libraries (PyAV, pydicom, Pillow) on a clip's
bytes inside `reading`, which turns what the library raises into the clip's MediaError
unless it is ours (`ours`); the build takes each step over a clip through `attempt`, which
returns the clip's problem as a value and stops on everything else, including a MediaError
that hides one of ours as its cause.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence, TypeVar

from ..errors import Us4Error
from ..escape import one_line
from ..files import storage_error
from .types import MediaError

__all__ = ["OursError", "attempt", "check_file", "check_frame_size", "frame_indices", "ours", "reading"]

T = TypeVar("T")

# errno values that say the machine failed (storage, permissions, memory, limits), not the file
_ENVIRONMENT_ERRNOS = frozenset({errno.EIO, errno.EACCES, errno.EPERM, errno.ESTALE, errno.ENOMEM, errno.ENOSPC,
                                 errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.EROFS, errno.EDQUOT})


class OursError(Us4Error):
    """This machine or us4 failed while reading a clip (not the clip): the build stops, the clip
    is not cached. One line; the original exception is its cause."""


def ours(exc: BaseException) -> bool:
    """True when `exc`, raised while a library reads a clip's bytes, is still a failure of this
    machine (no memory; an I/O error, no permission, a full disk: PyAV's errors for these are
    OSErrors too), never the clip's."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS)


@contextmanager
def reading(path: str | os.PathLike[str], reason: Callable[[Exception], str],
            catch: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
    """Around a library call on the clip at `path`: an exception of `catch` becomes the clip's
    MediaError(path, reason(exc)), unless it is ours (`ours`), which goes on up unchanged."""
    try:
        yield
    except MediaError:
        raise
    except catch as exc:
        if ours(exc):
            raise
        raise MediaError(path, reason(exc)) from exc


def _ours_in(exc: MediaError) -> Exception | None:
    """The first failure of ours among the causes and contexts of `exc`, if any."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, Exception) and ours(cause):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def attempt(step: Callable[..., T], *args, where: str, **kwargs) -> T | MediaError:
    """`step(*args, **kwargs)` over one clip: its result, or the clip's problem as a MediaError
    value. Anything else is ours and stops the run: a storage failure as the OSError it is (the
    build turns it into its one line naming the file), the rest (no memory, a bug) as one
    `OursError` line naming `where` (the clip, a local path) and the cause."""
    try:
        return step(*args, **kwargs)
    except MediaError as exc:
        failure = _ours_in(exc)  # a decoder that wrapped one of ours by mistake still stops the run
        if failure is None:
            return exc
    except Exception as exc:  # noqa: BLE001 - every other exception is ours, by definition
        failure = exc
    if isinstance(failure, OSError) and storage_error(failure) is not None:
        raise failure
    what = "this machine failed" if ours(failure) else "an unexpected error in us4 (a bug: please report it)"
    detail = f"{type(failure).__name__}: {one_line(failure)}" if str(failure) else type(failure).__name__
    raise OursError(f"{one_line(where)}: {what} while reading this clip ({detail}); the build stops and caches nothing "
                    "of this clip: the next run retries it") from failure


def check_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or MediaError when it is missing, not a file, or empty."""
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "no such file")
    if not p.is_file():
        raise MediaError(path, "not a file")
    if p.stat().st_size == 0:
        raise MediaError(path, "empty file")
    return p


def check_frame_size(path: str | os.PathLike[str], width: int, height: int, max_pixels: int | None) -> None:
    """MediaError when a `width` x `height` frame has more than `max_pixels` pixels (the recipe's
    max_frame_pixels; None: no limit). Callers pass the size a header states, before decoding:
    a few hundred kilobytes of H.264 can declare frames that take gigabytes to decode."""
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(path, f"frame {width}x{height} is larger than the recipe's limit of {max_pixels:,} "
                               "pixels (max_frame_pixels)")


def frame_indices(indices: Sequence[int]) -> list[int]:
    """The wanted frame indices, sorted, each once; ValueError (a caller's bug) for a negative one."""
    wanted = sorted({int(i) for i in indices})
    if wanted and wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    return wanted
