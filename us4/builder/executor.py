"""Where per-clip and per-shard work runs: this process, a pool of local worker processes,
or a Dask cluster (`--scheduler`). Each runs `fn(item, *args)` for every item and hands
each result to `on_result` as it arrives; the first unexpected exception ends the run.

Ctrl-C stops everything within about a second: local workers ignore SIGINT (so an
interrupt never kills one halfway through a cache write) and are terminated by this
process; finished clips are already in the cache, so the next run resumes.
"""
from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import pyarrow as pa

from ..errors import BuildError

OnResult = Callable[[Any, Any], None]


class Executor(Protocol):
    workers: int

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """`workers` forked processes (1: this process, no pool)."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None:
        items = list(items)
        if not items:
            return
        if self.workers <= 1 or len(items) == 1:
            for item in items:
                on_result(item, fn(item, *args))
            return
        # pyarrow imports pandas on its first array (~0.2 s): once here, inherited by the
        # forked workers, instead of once in every worker and again in this process.
        pa.array([0])
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=_context(),
                                   initializer=_ignore_sigint)
        try:
            pending: dict[Future, Any] = {pool.submit(fn, item, *args): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    on_result(item, fut.result())
        except BrokenProcessPool:
            _stop(pool)
            raise BuildError("a worker process died (crashed or ran out of memory); what it finished is kept: "
                             "run again to resume, with --workers 1 to find the clip") from None
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)

    def close(self) -> None:
        pass


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the pool now: terminate its workers rather than wait for their current items."""
    for child in multiprocessing.active_children():
        child.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.join(timeout=2)
        if child.is_alive():
            child.kill()


def _ignore_sigint() -> None:
    # A Ctrl-C reaches the whole process group; only the driver acts on it (it terminates us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _context() -> multiprocessing.context.BaseContext:
    # fork starts workers with the modules already imported (spawn costs each worker
    # about 0.5 s of imports); no thread runs in this process when the pool forks.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
