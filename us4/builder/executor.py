"""Where per-clip and per-shard work runs: this process, a pool of local worker processes,
or a Dask cluster (`--scheduler`). Each runs `fn(item, *args)` for every item and hands
each result to `on_result` as it arrives; the first unexpected exception ends the run.

Ctrl-C (and SIGTERM, which the commands turn into the same interrupt) stops everything
within about a second: local workers ignore SIGINT (so an interrupt never kills one halfway
through a cache write) and are terminated by this process; finished clips are already in the
cache, so the next run resumes. If this process dies without that (kill -9), its workers die
with it: each asks the kernel for SIGKILL when its parent dies (the fork server, with the
forkserver start method, which ends when this process does).
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol


from ..errors import BuildError
from ..system import available_cores, die_with_parent

OnResult = Callable[[Any, Any], None]


class Executor(Protocol):
    workers: int

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """`workers` forked processes (1: this process, no pool). One pool serves every phase of
    a build, so what its workers imported for ingest (pyarrow pulls in pandas, 0.3 s a
    process) also serves the shards and the contact sheet; `close` ends it."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None:
        items = list(items)
        if not items:
            return
        if self.workers <= 1 or (self._pool is None and len(items) == 1):
            for item in items:
                on_result(item, fn(item, *args))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context(), initializer=_worker_start)
        try:
            pending: dict[Future, Any] = {self._pool.submit(fn, item, *args): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    on_result(item, fut.result())
        except BrokenProcessPool:
            self._stop()
            raise BuildError("a worker process died (crashed or ran out of memory); what it finished is kept: "
                             "run again to resume, with --workers 1 to find the clip") from None
        except BaseException:
            self._stop()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _stop(self) -> None:
        """End the pool now: terminate its workers (and only them) rather than wait for their items."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        workers = list((pool._processes or {}).values())  # the pool's own; a caller's processes are left alone
        for child in workers:
            child.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for child in workers:
            child.join(timeout=2)
            if child.is_alive():
                child.kill()


def _worker_start() -> None:
    """A worker dies with its parent, however that dies. A Ctrl-C reaches the whole process
    group; only the driver acts on it (it terminates us). SIGTERM ends a worker at once, as
    by default (a forked worker inherits the driver's handler, which would raise instead)."""
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# What a worker needs, imported once before workers are forked and inherited by every one
# (pandas: pyarrow imports it on its first array, 0.25 s; imported once here, not once a worker,
# a POCUS build took 5.26 s instead of 5.45). A fork server imports fork_server first, which
# makes it die with this process.
_WORKER_MODULES = ["us4.builder.ingest", "us4.builder.writer", "pandas"]
_PRELOAD = ["us4.builder.fork_server", *_WORKER_MODULES]


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from this process, which has imported what they need: the fastest start
    (a fork server costs 0.9 s a build), and no re-import of the caller's main module. Not
    once onnxruntime runs here (the caller used the text detector, as tests do): a forked
    child inherits its threads' locks held, and a worker forked so hung for good. Then the
    workers come from a fork server, a fresh process that imported what they need once."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "onnxruntime" not in sys.modules:
        for name in _WORKER_MODULES:
            importlib.import_module(name)
        return multiprocessing.get_context("fork")
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    _start_fork_server()
    return ctx


def _start_fork_server() -> None:
    """Start the fork server (once a process) in an empty folder. It runs `python -c`, which
    puts its working directory first on sys.path: a folder named `us4` where the user works
    would be imported in place of us4. Its workers then return to this process's folder and
    sys.path. It dies with this process (see fork_server)."""
    from multiprocessing import forkserver

    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="us4-forkserver-") as empty:
        os.chdir(empty)
        try:
            forkserver.ensure_running()
        finally:
            os.chdir(here)


class DaskExecutor:
    """The per-clip and per-shard work on a Dask cluster: `tcp://HOST:PORT` (a scheduler that
    `dask scheduler`, dask-jobqueue or Kubernetes started), or `local` (a LocalCluster of
    `workers` single-threaded processes started here).

    Raw clips and the output folder must sit on storage every worker sees (the HPC case: a
    shared filesystem). `check_workers` proves it before any work is sent: every worker
    must see the raw folders, and read back a token this driver wrote into the build's work
    folder (a folder of the same name on a worker's local disk would not have it); and run
    this driver's us4 and byte-shaping libraries (else its bytes would differ). Workers that
    join later (a SLURM cluster scaling up) are checked by their first task. A worker that
    dies mid-build costs nothing: Dask reruns its tasks on another worker, and what it
    finished is in the clip cache. Every build's tasks have keys of their own, so builds
    sharing a long-running scheduler never share results.
    """

    CONNECT_TIMEOUT_S = 5
    WORKERS_TIMEOUT_S = 60  # for a cluster still starting its workers (dask-jobqueue's jobs queue)
    CLOSE_TIMEOUT_S = 5

    def __init__(self, address: str, workers: int | None = None):
        from distributed import Client, LocalCluster

        self.address = address
        self._cluster = None
        self._interrupted = False
        self._ours: list = []  # the LocalCluster's worker processes, stopped at once after Ctrl-C
        self._expected: dict | None = None
        self._count, self._counted = 0, 0.0
        try:
            if address == "local":
                before = set(multiprocessing.active_children())
                self._cluster = LocalCluster(n_workers=workers or available_cores(), threads_per_worker=1,
                                             processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL)
                self._ours = [p for p in multiprocessing.active_children() if p not in before]
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout=self.CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise BuildError(f"--scheduler {address}: no Dask scheduler answered within "
                             f"{self.CONNECT_TIMEOUT_S} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                             ) from None

    @property
    def workers(self) -> int:
        """Workers alive (asked of the scheduler at most every 2 s: progress reads it per clip)."""
        import time

        if time.monotonic() - self._counted > 2:
            self._count = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
            self._counted = time.monotonic()
        return self._count

    def check_workers(self, paths: list[str], work: Path, text: bool) -> None:
        """Every worker sees every path and the token in `work`, and runs this driver's us4
        and libraries (the text detector's too, when `text`); else one clear error."""
        import secrets

        from distributed import TimeoutError as DaskTimeout

        token = secrets.token_hex(16)
        work.mkdir(parents=True, exist_ok=True)
        (work / TOKEN_FILE).write_text(token)
        try:
            self.client.wait_for_workers(1, timeout=self.WORKERS_TIMEOUT_S)
        except (DaskTimeout, TimeoutError):
            raise BuildError(f"--scheduler {self.address}: no worker joined within {self.WORKERS_TIMEOUT_S} s") from None
        self._expected = {"paths": paths, "work": str(work), "token": token, "text": text,
                          "versions": _worker_facts(paths, str(work), text)["versions"]}
        for worker, facts in sorted(self.client.run(_worker_facts, paths, str(work), text).items()):
            _compare(self._expected, facts, worker)

    def run(self, fn: Callable, items: Iterable, args: tuple, on_result: OnResult) -> None:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        items = list(items)
        if not items:
            return
        # pure=False: keys unique to this build (a shared scheduler never mixes two builds' tasks)
        futures = [self.client.submit(_checked, self._expected, fn, item, *args, pure=False) for item in items]
        item_of = dict(zip(futures, items))
        try:
            for fut in as_completed(futures):
                on_result(item_of[fut], fut.result())
        except KilledWorker as exc:
            self.client.cancel(futures)
            raise BuildError(f"a task killed {exc.args[1] if len(exc.args) > 1 else 'its workers'} several times "
                             "(crash or out of memory); what was finished is kept: run again to resume") from None
        except BaseException:
            self._interrupted = True
            self.client.cancel(futures, force=True)
            raise

    def close(self) -> None:
        """Stop the client, and a LocalCluster started here. After Ctrl-C, at once: its
        worker processes are killed (what they finished is in the cache), and the connection
        errors that follow are noise. A shutdown slower than CLOSE_TIMEOUT_S (a loaded
        machine) changes nothing built: the LocalCluster's processes are killed then. A remote
        cluster's workers finish the task they run."""
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if self._interrupted:
            self._kill_ours()
        try:
            self.client.close(timeout=self.CLOSE_TIMEOUT_S)
            if self._cluster is not None:
                self._cluster.close(timeout=self.CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError, RuntimeError):
            pass
        self._kill_ours()

    def _kill_ours(self) -> None:
        for process in self._ours:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


TOKEN_FILE = "shared-storage-token"
_CHECKED: set[str] = set()  # in a worker: the builds (tokens) whose checks it passed


def _checked(expected: dict | None, fn: Callable, item, *args):
    """Run on a worker: on its first task of a build, the checks a late-joining worker never
    had; then the task itself."""
    if expected is not None and expected["token"] not in _CHECKED:
        import socket

        _compare(expected, _worker_facts(expected["paths"], expected["work"], expected["text"]),
                 f"{socket.gethostname()} (process {__import__('os').getpid()})")
        _CHECKED.add(expected["token"])
    return fn(item, *args)


def _compare(expected: dict, facts: dict, worker: str) -> None:
    unseen = [p for p, seen in zip(expected["paths"], facts["sees"]) if not seen]
    if unseen:
        raise BuildError(f"Dask worker {worker} cannot see {unseen[0]}: raw clips and --out must be on storage every "
                         "worker sees (a shared filesystem)")
    if facts["token"] != expected["token"]:
        raise BuildError(f"Dask worker {worker} does not see this build's work folder {expected['work']} (a folder of "
                         "that name on its own disk, not the shared one): --out must be on storage every worker sees")
    mine, theirs = expected["versions"], facts["versions"]
    for name in sorted(set(mine) | set(theirs)):
        if mine.get(name) != theirs.get(name):
            raise BuildError(f"Dask worker {worker} runs {name} {theirs.get(name, 'absent')}, this driver "
                             f"{mine.get(name, 'absent')}: its bytes would differ; install the same versions on every "
                             "worker")


def _worker_facts(paths: list[str], work: str, text: bool) -> dict:
    """Which paths this process sees, the token it reads from the work folder, and the versions its bytes depend on."""
    import os

    from ..version import __version__
    from .environment import byte_libraries

    try:
        token = (Path(work) / TOKEN_FILE).read_text()
    except OSError:
        token = None
    return {"sees": [os.path.exists(p) for p in paths], "token": token,
            "versions": {"us4": __version__, **byte_libraries(text)}}
