"""Facts of the machine a run is on, and how a run's processes end (a leaf module).

A command's child processes end with it however it ends: on Linux the kernel signals each
child when the process that forked it dies (kill -9 included), so that no worker lives on
holding the build's files or the terminal.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# loaded here, in the parent: a child just forked only calls it
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_forked_by: int | None = None  # in a forked child: the process that forked it (set in the parent at the fork)


def _remember_forker() -> None:
    global _forked_by
    _forked_by = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_remember_forker)  # runs for multiprocessing forks and subprocess preexec_fn


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Call first thing in a forked child: the kernel sends it `sig` when the process that forked
    it dies, however that died. If that process died before this call (nobody would signal
    the child then), exit now. Linux only; elsewhere a child ends when its work pipes close."""
    if _prctl is None:
        return
    if _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if _forked_by is not None and os.getppid() != _forked_by:
        os._exit(1)
