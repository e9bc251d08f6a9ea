"""Wall time and peak memory of a command, for the benchmark scripts beside this file."""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import psutil

#: between two memory samples: reading a process's proportional set size walks its page tables,
#: and every 20 ms it slowed a 2-worker build by 19 % (45.9 s against 38.5 s unsampled, BLUES)
SAMPLE_S = 0.2


def _memory(process: psutil.Process) -> int:
    """Proportional set size where the system reports it, else resident size."""
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


def run_measured(cmd: list[str], *, children: bool = True, ok: Collection[int] = (0,), cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak memory (sampled every SAMPLE_S) of `cmd`, with all its children's when
    `children`. Memory is the proportional set size where the system reports it (Linux): a page
    that forked workers share with their parent counts once across the tree, not once in each
    process as summed resident sizes would count it (the build's workers share the ~120 MiB of
    libraries the driver imported). Its stderr goes to a file (a pipe nobody reads while it
    runs would stall a chatty command); an exit status outside `ok` ends the benchmark
    with its tail."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env)
        me, peak = psutil.Process(proc.pid), 0
        while True:
            try:
                tree = [me, *(me.children(recursive=True) if children else [])]
                peak = max(peak, sum(_memory(p) for p in tree))
            except psutil.Error:
                pass
            try:
                proc.wait(timeout=SAMPLE_S)  # returns within ~50 ms of the exit: the wall time stays exact
                break
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - start
        if proc.returncode not in ok:
            err.seek(0)
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-3000:]}")
    return wall, peak


def children_cpu() -> float:
    """CPU seconds (user and system) of every child process this one has waited for so far,
    theirs included: the difference across a call is what that call's processes spent."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
