"""Where per-clip and per-shard work runs: this process, a pool of local worker processes,
or a Dask cluster (`--scheduler`). Each runs `fn(item, *args)` for every item and hands
each result to `on_result` as it arrives; the first unexpected exception ends the run.

Ctrl-C stops everything within about a second: local workers ignore SIGINT (so an
interrupt never kills one halfway through a cache write) and are terminated by this
process; finished clips are already in the cache, so the next run resumes.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol


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


# What a worker needs, imported once in the fork server and inherited by every worker it
# forks (pandas: pyarrow imports it on its first array).
_PRELOAD = ["us4.builder.ingest", "us4.builder.writer", "pandas"]


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from this process, which has imported what they need: the fastest start
    (a fork server costs 0.9 s a build), and no re-import of the caller's main module. Not
    once onnxruntime runs here (the caller used the text detector, as tests do): a forked
    child inherits its threads' locks held, and a worker forked so hung for good. Then the
    workers come from a fork server, a fresh process that imported what they need once."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "onnxruntime" not in sys.modules:
        return multiprocessing.get_context("fork")
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class DaskExecutor:
    """The per-clip and per-shard work on a Dask cluster: `tcp://HOST:PORT` (a scheduler that
    `dask scheduler`, dask-jobqueue or Kubernetes started), or `local` (a LocalCluster of
    `workers` single-threaded processes started here).

    Raw clips and the output folder must sit on storage every worker sees (the HPC case: a
    shared filesystem); `check_workers` proves it, and that every worker runs the same us4
    and byte-shaping libraries as this driver (else its bytes would differ), before any
    work is sent. A worker that dies mid-build costs nothing: Dask reruns its tasks on
    another worker, and what it finished is in the clip cache.
    """

    CONNECT_TIMEOUT_S = 5

    def __init__(self, address: str, workers: int | None = None):
        from distributed import Client, LocalCluster

        self.address = address
        self._cluster = None
        try:
            if address == "local":
                from ..system import available_cores

                self._cluster = LocalCluster(n_workers=workers or available_cores(), threads_per_worker=1,
                                             processes=True, dashboard_address=":0", silence_logs=logging.ERROR)
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout=self.CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise BuildError(f"--scheduler {address}: no Dask scheduler answered within "
                             f"{self.CONNECT_TIMEOUT_S} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                             ) from None

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def check_workers(self, paths: list[str], text: bool) -> None:
        """Every worker sees every path and runs this driver's us4 and libraries (the text
        detector's too, when `text`); else one clear error."""
        if self.workers == 0:
            raise BuildError(f"--scheduler {self.address}: the scheduler has no workers")
        mine = _worker_facts(paths, text)
        for worker, facts in sorted(self.client.run(_worker_facts, paths, text).items()):
            unseen = [p for p, seen in zip(paths, facts["sees"]) if not seen]
            if unseen:
                raise BuildError(f"Dask worker {worker} cannot see {unseen[0]}: raw clips and --out must be on "
                                 "storage every worker sees (a shared filesystem)")
            for name in sorted(set(mine["versions"]) | set(facts["versions"])):
                if mine["versions"].get(name) != facts["versions"].get(name):
                    raise BuildError(f"Dask worker {worker} runs {name} {facts['versions'].get(name, 'absent')}, this "
                                     f"driver {mine['versions'].get(name, 'absent')}: its bytes would differ; install "
                                     "the same versions on every worker")

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        items = list(items)
        if not items:
            return
        futures = self.client.map(fn, items, *[[a] * len(items) for a in args], pure=False,
                                  key=[f"{fn.__name__}-{i}" for i in range(len(items))])
        item_of = {f.key: item for f, item in zip(futures, items)}
        try:
            for fut in as_completed(futures):
                on_result(item_of[fut.key], fut.result())
        except KilledWorker as exc:
            self.client.cancel(futures)
            raise BuildError(f"a task killed {exc.args[1] if len(exc.args) > 1 else 'its workers'} several times "
                             "(crash or out of memory); what was finished is kept: run again to resume") from None
        except BaseException:
            self.client.cancel(futures)
            raise

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _worker_facts(paths: list[str], text: bool) -> dict:
    """Run on each worker: which paths it sees, and the versions its bytes depend on."""
    import os

    from .. import __version__
    from .environment import byte_libraries

    return {"sees": [os.path.exists(p) for p in paths], "versions": {"us4": __version__, **byte_libraries(text)}}
