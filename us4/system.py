"""Facts of the machine a run is on, and how a run's processes end (a leaf module).

A command's child processes end with it however it ends: on Linux the kernel signals each
child when the process that forked it dies (kill -9 included), so that no worker lives on
holding the build's files or the terminal; SIGTERM (what `timeout`, SLURM and `docker stop`
send) stops a command exactly as Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# loaded here, in the parent: a child just forked only calls it
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_IMPORTED = time.time()
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


COMMAND_STARTED = "US4_COMMAND_STARTED"


def process_started() -> float:
    """When this process began, in `time.time()` seconds (Linux: /proc, to 10 ms; elsewhere the
    import of this module)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks since boot
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


def command_started() -> float:
    """When the running command began: $US4_COMMAND_STARTED where a launcher set it for the
    processes it starts (`us4 benchmark --nproc`) and it is a time before this process began (a
    value from elsewhere, nonsense or in the future, is not taken), else `process_started()`."""
    own = process_started()
    with contextlib.suppress(KeyError, ValueError):
        given = float(os.environ[COMMAND_STARTED][:32])
        if math.isfinite(given) and own - 86_400 < given <= own + 1:  # +1: /proc's 10 ms ticks, rounded
            return given
    return own


def thread_map(fn: Callable[[T], U], items: list[T], workers: int | None = None) -> list[U]:
    """`fn` over `items` in threads, results in order. On Ctrl-C or SIGTERM (or any failure) the
    items not yet begun are dropped, so a stop waits for the running ones only, not for the rest."""
    pool = ThreadPoolExecutor(max_workers=workers or available_cores())
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: every clean-up that Ctrl-C runs
    runs for it too."""

    exit_status = 143  # 128 + SIGTERM: what a shell reports for a command SIGTERM ended


def interrupt_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by `exc`: 130 for Ctrl-C, 143 for SIGTERM."""
    return exc.exit_status if isinstance(exc, Terminated) else 130


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the block (the main thread's; elsewhere nothing changes).
    A second SIGTERM, while the first one's clean-up runs, ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_child(args: list[str], *, capture_output: bool = False, input: str | bytes | None = None,
              **popen) -> subprocess.CompletedProcess:
    """subprocess.run for a child that ends with this process: the kernel sends it SIGTERM if
    this process dies (kill -9 included), and an interrupt here (Ctrl-C, SIGTERM) sends it
    SIGTERM and waits for it. subprocess.run would SIGKILL it, and a git killed so leaves its
    index.lock behind; on SIGTERM git removes its lock files first."""
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    with subprocess.Popen(args, preexec_fn=functools.partial(die_with_parent, signal.SIGTERM), **popen) as proc:
        try:
            out, err = proc.communicate(input)
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def in_background(fn: Callable[[], T]) -> T:
    """fn() in a thread of its own that this thread waits for, so that Ctrl-C or SIGTERM reaches
    the caller at once. Raised in the thread that runs a thread pool (huggingface_hub's
    transfers), an interrupt would first wait for every transfer in flight to end. The caller
    then ends the process without waiting for fn's threads (os._exit): what they had written
    is where the next run resumes, as after kill -9."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller, raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="us4-transfer", daemon=True)
    thread.start()
    thread.join()
    done, value = outcome[0]
    if not done:
        raise value
    return value
