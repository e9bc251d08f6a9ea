"""Scaling figures, measured in one run on this machine.

    python benchmarks/scale.py [--pocus DATA_DIR] [--work DIR] [--skip-smoke] [--skip-ddp]

Training (issue 10 part 2, issue 8 defect 6):
- data-parallel pretraining: images/s of USCL pretraining on 2 gloo ranks against 1 rank, the
  same global batch, the same release, one after the other in this run. On a 2-core machine
  both use the same 2 cores (1 thread a rank against 2 threads in one process), so the ratio
  shows the cost of the gathers and gradient all-reduces, not a speed-up;
- the smoke benchmark's wall time on the POCUS sample and on a copy of it twice the size (every
  clip again under a new name, with its own bytes, and its sheet row): the smoke config bounds
  its steps per epoch, so the second should cost little more than the first.

Build (issue 10 part 1), on a real cluster started here (`dask scheduler` and two `dask worker`
processes of one thread each, on 127.0.0.1):
- `us4 build --scheduler` wall time against the local pool with the same number of processes
  (2), the same recipe and clips, interleaved runs (target: ratio 1.15 or lower);
- the driver's peak resident memory (the `us4 build` process alone: with a scheduler, the work
  runs in the workers) at 1x and 4x the sample (`repeat_corpus`), and the local pool's (the
  driver and its forked workers) beside it (target: ratio under 1.2);
- per-clip costs for docs/scaling.md: ingest CPU seconds per clip and per frame kept.
Needs the `bench` extra (psutil).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from measure import run_measured  # noqa: E402 - beside this script
from us4.hub.mirror import free_port  # noqa: E402 - after the checkout is on the path
PYTHON_ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SHEET = "dataset_metadata.csv"


def repeat_corpus(data: Path, out: Path, times: int) -> Path:
    """A POCUS `data/` folder with every clip `times` times: the originals, then copies named
    STEM-copyK.EXT, each with its sheet row. A copy's bytes differ from the original's (an ISO
    BMFF `free` box appended, which demuxers skip), so builds and folds treat it as a clip of its
    own, as a bigger corpus would have."""
    if out.exists():
        shutil.rmtree(out)
    videos = data / "pocus_videos"
    stems: dict[str, list[str]] = {}
    for clip in sorted(p for p in videos.rglob("*") if p.is_file()):
        target = out / clip.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clip, target)
        for k in range(1, times):
            name = f"{clip.stem}-copy{k}"
            (target.parent / f"{name}{clip.suffix}").write_bytes(
                clip.read_bytes() + (16).to_bytes(4, "big") + b"free" + k.to_bytes(8, "big"))
            stems.setdefault(clip.stem, []).append(name)
    with open(data / SHEET, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    with open(out / SHEET, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        writer.writerows({**row, "Filename": name} for row in rows for name in stems.get(row["Filename"], []))
    return out


def _us4(*args: str) -> float:
    """Run `us4 ARGS` with this checkout; its wall time in seconds."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "us4.cli", *args], cwd=REPO, env=PYTHON_ENV,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"us4 {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


# --- build on Dask (issue 10 part 1): --scheduler against the local pool, driver memory 1x/4x ----

class _Cluster:
    """`dask scheduler` and `workers` `dask worker` processes (one thread each) on 127.0.0.1."""

    def __init__(self, workers: int):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        port = self.address.rsplit(":", 1)[1]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True,
                 "env": PYTHON_ENV}
        self.procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", port,
                                        "--no-dashboard"], **quiet)]
        self.procs += [subprocess.Popen(["dask", "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                                         "--no-dashboard"], **quiet) for _ in range(workers)]
        from distributed import Client

        try:
            with Client(self.address, timeout=30) as client:
                client.wait_for_workers(workers, timeout=60)
        except BaseException:
            self.close()  # no scheduler or worker outlives a cluster that never came up
            raise

    def close(self) -> None:
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=30)


def build_figures(data: Path, work: Path, repeats: int) -> None:
    import numpy as np

    raws = {1: data, 4: repeat_corpus(data, work / "raw-4x", 4)}
    cluster = _Cluster(2)
    try:
        walls: dict[str, list[float]] = {"local": [], "dask": []}
        peaks: dict[tuple[str, int], int] = {}
        for r in range(repeats):  # interleaved, so that other load on the machine hits both alike
            for mode, extra in (("local", ["--workers", "2"]), ("dask", ["--scheduler", cluster.address])):
                for k, raw in raws.items():
                    if k > 1 and r:
                        continue  # the 4x corpus once per mode: its memory, not its time, is measured
                    out = work / f"build-{mode}-{k}x"
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.rmtree(f"{out}.local", ignore_errors=True)
                    wall, peak = run_measured([sys.executable, "-m", "us4.cli", "build", "pocus", "--raw",
                                               f"pocus={raw}", "--out", str(out), "--quiet", *extra],
                                              children=mode == "local", cwd=REPO, env=PYTHON_ENV)
                    peaks[(mode, k)] = max(peaks.get((mode, k), 0), peak)
                    if k == 1:
                        walls[mode].append(wall)
        local, dask = (float(np.median(walls[m])) for m in ("local", "dask"))
        lock = json.loads((work / "build-local-1x" / "release.json").read_text())
        print(f"build of the POCUS sample ({lock['counts']['videos']} clips, {lock['counts']['frames']} frames), "
              f"median of {repeats}: local pool of 2 processes {local:.2f} s, Dask scheduler with 2 workers "
              f"{dask:.2f} s (runs: {' '.join(f'{w:.2f}' for w in walls['local'])} | "
              f"{' '.join(f'{w:.2f}' for w in walls['dask'])})", flush=True)
        print(f"ratio --scheduler / local pool: {dask / local:.2f} (target <= 1.15)")
        mib = {k: v / 2**20 for k, v in peaks.items()}
        print(f"driver peak memory with --scheduler: 1x {mib[('dask', 1)]:.0f} MiB, 4x {mib[('dask', 4)]:.0f} MiB: "
              f"ratio {mib[('dask', 4)] / mib[('dask', 1)]:.2f} (target < 1.2); local pool, driver and workers: "
              f"1x {mib[('local', 1)]:.0f} MiB, 4x {mib[('local', 4)]:.0f} MiB")
        print(f"per clip: {2 * local / lock['counts']['videos']:.3f} CPU-s a clip, "
              f"{2 * local / lock['counts']['frames'] * 1000:.1f} CPU-ms a kept frame (2 processes x wall / count, "
              "the whole build included)")
    finally:
        cluster.close()


# --- training: data-parallel pretraining throughput -------------------------------------------

def _throughput_rank(rank: int, size: int, port: int, release: str, batch: int, epochs: int, sync_bn: bool,
                     result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import numpy as np
    import torch

    from us4.release.read import open_release
    from us4.system import available_cores
    from us4.train.benchmark import pretrain_split
    from us4.train.data import load_release_videoset
    from us4.train.config import get_config
    from us4.train.distributed import joined, threads_per_rank
    from us4.train.pretrain import pretrain

    cfg = get_config("smoke")
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, batch_size=batch, steps_per_epoch=None, sync_batchnorm=sync_bn))
    vs = load_release_videoset(open_release(release), cfg.input_size)
    train_v, val_v, _ = pretrain_split(vs, cfg.pretrain.holdout_fold)
    with joined(torch.device("cpu")) as (world, dev):
        torch.set_num_threads(threads_per_rank(available_cores(), world))
        r = pretrain(vs, train_v, val_v[:0], np.full(len(vs), -1), 1, cfg, spg=True, device=dev, seed=0,
                     epochs=epochs, world=world)
    if world.main:  # the first epoch pays for warm-up (allocations, gloo connections): left out
        rates = [h["images_per_s"] for h in r.history[1:]]
        Path(result).write_text(json.dumps({"images_per_s": float(np.median(rates)), "threads": torch.get_num_threads(),
                                            "steps": sum(h["steps"] for h in r.history[1:])}))


def pretrain_images_per_s(release: Path, ranks: int, batch: int, epochs: int, sync_bn: bool = True) -> dict:
    """USCL pretraining images/s (global: both views of every video of every step) on `ranks` ranks."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        mp.spawn(_throughput_rank, args=(ranks, free_port(), str(release), batch, epochs, sync_bn, str(result)),
                 nprocs=ranks, join=True)
        return json.loads(result.read_text())


# --- training: the smoke benchmark as the corpus grows ----------------------------------------

def smoke_wall_times(data: Path, work: Path, times: int = 2) -> dict[str, float]:
    """Wall time of `us4 benchmark --config smoke` on the sample release and on one `times` its size."""
    walls = {}
    for k in (1, times):
        raw = data if k == 1 else repeat_corpus(data, work / f"raw-{k}x", k)
        rel, bench = work / f"pocus-{k}x", work / f"bench-{k}x"
        for p in (rel, bench):
            shutil.rmtree(p, ignore_errors=True)
        _us4("build", str(REPO / "pipelines" / "pocus.yaml"), "--raw", f"pocus={raw}", "--out", str(rel), "--quiet")
        frames = json.loads((rel / "release.json").read_text())["counts"]
        walls[f"{k}x"] = _us4("benchmark", "--pretrain", str(rel), "--eval", str(rel), "--config", "smoke",
                              "--out", str(bench), "--device", "cpu", "--quiet")
        print(f"smoke benchmark, {k}x sample ({frames['videos']} videos, {frames['frames']} frames): "
              f"{walls[f'{k}x']:.0f} s", flush=True)
    return walls


def main() -> None:
    import numpy as np

    from us4.system import available_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pocus", type=Path, default=REPO.parent / "shared" / "pocus" / "data",
                    help="a POCUS data/ folder (pocus_videos/ and the sheet)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--skip-smoke", action="store_true", help="skip the smoke benchmark wall times (minutes)")
    ap.add_argument("--skip-ddp", action="store_true", help="skip data-parallel pretraining throughput")
    ap.add_argument("--skip-build", action="store_true", help="skip the Dask build figures")
    ap.add_argument("--batch", type=int, default=32, help="global batch (videos per step) for the throughput")
    ap.add_argument("--epochs", type=int, default=6, help="pretraining epochs for the throughput (the first is warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each rank count (medians)")
    args = ap.parse_args()
    if not (args.pocus / "pocus_videos").is_dir():
        sys.exit(f"{args.pocus}: not a POCUS data/ folder (pocus_videos/ and {SHEET})")
    work = args.work or Path(tempfile.mkdtemp(prefix="us4-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{available_cores()} cores; POCUS data {args.pocus}; scratch {work}", flush=True)

    if not args.skip_build:
        build_figures(args.pocus, work, args.repeats + 1)
    if not args.skip_ddp:
        rel = work / "pocus-1x"
        if not (rel / "release.json").is_file():
            _us4("build", str(REPO / "pipelines" / "pocus.yaml"), "--raw", f"pocus={args.pocus}", "--out", str(rel),
                 "--quiet")
        variants = {"1 rank": (1, True), "2 ranks": (2, True), "2 ranks, batch norm per rank": (2, False)}
        runs: dict[str, list[dict]] = {k: [] for k in variants}
        for _ in range(args.repeats):  # interleaved: load from other work on the machine hits all alike
            for name, (ranks, sync_bn) in variants.items():
                runs[name].append(pretrain_images_per_s(rel, ranks, args.batch, args.epochs, sync_bn))
        rate = {k: float(np.median([r["images_per_s"] for r in v])) for k, v in runs.items()}
        print(f"pretraining, global batch {args.batch} at 64 px, median of {args.repeats} runs of "
              f"{runs['1 rank'][0]['steps']} measured steps each: 1 rank ({runs['1 rank'][0]['threads']} threads) "
              f"{rate['1 rank']:.1f} images/s; 2 gloo ranks ({runs['2 ranks'][0]['threads']} thread each) "
              f"{rate['2 ranks']:.1f} images/s with synchronised batch norm (the default), "
              f"{rate['2 ranks, batch norm per rank']:.1f} without", flush=True)
        print(f"ratio 2 ranks / 1 rank: {rate['2 ranks'] / rate['1 rank']:.2f} "
              f"({rate['2 ranks, batch norm per rank'] / rate['1 rank']:.2f} with batch norm per rank). Caveat: "
              f"{available_cores()} cores bound both runs, so this is the cost of data parallelism here (gathers, "
              "gradient all-reduce, batch-norm statistics over gloo), not its speed-up where each rank has its own "
              "cores or GPU", flush=True)
    if not args.skip_smoke:
        walls = smoke_wall_times(args.pocus, work)
        print(f"smoke benchmark wall time 2x / 1x sample: {walls['2x'] / walls['1x']:.2f}")


if __name__ == "__main__":
    main()
