"""Wall time and peak memory of a command, for the benchmark scripts beside this file."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import psutil


def run_measured(cmd: list[str], *, children: bool = True, ok: Collection[int] = (0,), cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak resident memory (sampled every 20 ms) of `cmd`, with all its
    children's when `children`. Its stderr goes to a file (a pipe nobody reads while it
    runs would stall a chatty command); an exit status outside `ok` ends the benchmark
    with its tail."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=env)
        me, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                rss = me.memory_info().rss
                if children:
                    rss += sum(c.memory_info().rss for c in me.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if proc.returncode not in ok:
            err.seek(0)
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-3000:]}")
    return wall, peak
