"""Data-parallel training on 2 gloo ranks started for real: torch.multiprocessing processes that
rendezvous on a free 127.0.0.1 port (the environment torchrun gives its workers), and torchrun
itself behind `us4 benchmark --nproc 2`."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from us4.hub.mirror import free_port
from us4.train.augment import augment
from us4.train.config import AugmentConfig, get_config
from us4.train.data import load_videoset
from us4.train.distributed import (GlobalBatchNorm2d, World, gather_batch, joined, sigterm_held_off,
                                   synchronise_batchnorm)
from us4.train.pretrain import pretrain, step_losses
from us4.train.resnet import USCLModel
from us4.train.spg import epoch_batches, sample_rows
from us4.train.synthetic import synthetic_tables

pytestmark = pytest.mark.slow  # end-to-end (torch distributed under torchrun): python -m pytest -m slow

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def _rank_main(rank: int, size: int, port: int, fn, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fn(*args)


def run_ranks(fn, *args, size: int = 2) -> None:
    """fn(*args) on `size` ranks; a rank's exception fails the call with that rank's traceback."""
    mp.spawn(_rank_main, args=(size, free_port(), fn, args), nprocs=size, join=True)


def tiny_config():
    cfg = get_config("tiny")
    return replace(cfg, pretrain=replace(cfg.pretrain, batch_size=7))  # 7 videos: slices of 4 and 3


# --- pure parts: slices of the global batch ----------------------------------------------------

def test_ranks_split_every_global_batch_without_overlap():
    members = [np.arange(10 * v, 10 * v + 10) for v in range(23)]
    for n in (2, 7, 16):
        for size in (1, 2, 3):
            parts = [World(rank=r, size=size).part(n) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # consecutive, disjoint, covering
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1
    # every rank draws the same epoch from (seed, epoch) and takes its slice: the slices are the
    # single process's batch, whatever the number of ranks
    single = [sample_rows(members, b, rng) for rng in [np.random.default_rng([5, 3])]
              for b in epoch_batches(np.arange(23), 8, rng)]
    for size in (2, 3):
        seen = []
        for r in range(size):
            rng = np.random.default_rng([5, 3])
            for k, b in enumerate(epoch_batches(np.arange(23), 8, rng, min_size=max(2, size))):
                batch = sample_rows(members, b, rng)
                np.testing.assert_array_equal(batch.rows, single[k].rows)
                lo, hi = World(rank=r, size=size).part(len(b))
                seen.extend(batch.part(lo, hi).videos.tolist())
        assert sorted(seen) == sorted(v for b in single for v in b.videos.tolist())  # each video on one rank


def test_bounded_epochs_and_sliced_augmentation():
    rng = np.random.default_rng(0)
    assert [len(b) for b in epoch_batches(np.arange(100), 16, rng, max_steps=3)] == [16, 16, 16]
    assert [len(b) for b in epoch_batches(np.arange(17), 8, rng, min_size=2)] == [8, 8]  # a batch of 1: dropped
    assert [len(b) for b in epoch_batches(np.arange(19), 8, rng, min_size=4)] == [8, 8]  # 3 < 4 ranks: dropped
    x = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8)
    whole = augment(x, AugmentConfig(), torch.Generator().manual_seed(9))
    parts = [augment(x[lo:hi], AugmentConfig(), torch.Generator().manual_seed(9), of_batch=(lo, 12))
             for lo, hi in ((0, 5), (5, 12))]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)


# --- 2 ranks: the loss and gradients of the global batch ---------------------------------------

def _gradients_rank() -> None:
    cfg = tiny_config()
    with joined(torch.device("cpu")) as (world, dev):
        torch.manual_seed(0)
        reference = USCLModel(5)
        g = torch.Generator().manual_seed(1)
        n = 7
        v1, v2 = torch.randn(n, 1, SIZE, SIZE, generator=g), torch.randn(n, 1, SIZE, SIZE, generator=g)
        labels = torch.tensor([0, -1, 3, 1, -1, 4, 2])

        one = copy.deepcopy(reference)  # one process, the whole global batch
        loss_one = step_losses(one, v1, v2, labels, labels >= 0, cfg)[0]
        loss_one.backward()

        lo, hi = world.part(n)
        counts = world.counts(n)

        def rank_step(sync: bool) -> tuple[torch.Tensor, torch.nn.Module]:
            model = copy.deepcopy(reference)
            if sync:
                synchronise_batchnorm(model, dev)
            net = DistributedDataParallel(model)
            loss = step_losses(net, v1[lo:hi], v2[lo:hi], labels, labels >= 0, cfg,
                               gather=lambda t: gather_batch(t, world, counts))[0]
            loss.backward()
            return loss, model

        loss, model = rank_step(sync=True)
        torch.testing.assert_close(loss, loss_one, rtol=1e-5, atol=1e-6)
        for (name, p_one), p in zip(one.named_parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(p.grad, p_one.grad, rtol=1e-3, atol=1e-5, msg=f"rank {world.rank} {name}")
        # running statistics of the global batch
        for (name, b_one), b in zip(one.named_buffers(), model.buffers(), strict=True):
            torch.testing.assert_close(b, b_one, rtol=1e-4, atol=1e-6, msg=name)

        # batch norm over each rank's slice only: other statistics, other gradients (the test can tell)
        _, local = rank_step(sync=False)
        worst = max(float((p.grad - p_one.grad).abs().max() / p_one.grad.abs().max().clamp(min=1e-12))
                    for p_one, p in zip(one.parameters(), local.parameters(), strict=True)
                    if p_one.grad.abs().max() > 0)
        assert worst > 1e-2, worst


def test_two_ranks_give_the_single_process_loss_and_gradients():
    """Global batch of 7 (slices 4 + 3), synchronised batch norm in training mode: NT-Xent + CE of the
    gathered batch and the DDP-averaged gradients equal one process's on the same 7 items."""
    run_ranks(_gradients_rank)


def _pretrain_rank(frames, videos) -> None:
    cfg = tiny_config()
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, steps_per_epoch=1))
    vs = load_videoset(frames, videos, SIZE, threads=1)
    train_v, val_v = np.flatnonzero(vs.folds != 0), np.flatnonzero(vs.folds == 0)
    labels = vs.label_ids.copy()
    labels[::3] = -1
    kw = dict(spg=True, device=torch.device("cpu"), seed=4)
    with joined(torch.device("cpu")) as (world, _dev):
        two = pretrain(vs, train_v, val_v, labels, 3, cfg, world=world, **kw)
        one = pretrain(vs, train_v, val_v, labels, 3, cfg, **kw)  # in this process alone
    assert [h["steps"] for h in two.history] == [h["steps"] for h in one.history] == [1, 1]
    # the loss of step 1 (initial weights), of step 2 (after one update) and the validation loss
    # after one update: the same computation, so equal to float rounding
    for key in ("loss", "contrastive", "supervised"):
        for a, b in zip(two.history, one.history, strict=True):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
    assert two.history[0]["val_loss"] == pytest.approx(one.history[0]["val_loss"], rel=1e-5)
    # Adam's first updates turn float-noise gradient components into steps of about lr, so later
    # figures drift apart as much as one process's do between 1 and 2 threads
    assert two.history[1]["val_loss"] == pytest.approx(one.history[1]["val_loss"], rel=1e-3)
    assert not any(isinstance(m, GlobalBatchNorm2d) for m in two.model.modules())  # plain batch norm again


def test_two_rank_pretraining_is_the_single_process_run():
    """Two steps of USCL pretraining on 2 ranks (same seed, global batch 7 split 4 + 3: the same
    pairs, augmentations, negatives and batch-norm statistics) give the single-process losses."""
    frames, videos = synthetic_tables(n_videos=20, frames_per_video=5, size=SIZE, seed=2)
    run_ranks(_pretrain_rank, frames, videos)


def _per_rank_batchnorm_rank(frames, videos) -> None:
    vs = load_videoset(frames, videos, SIZE, threads=1)
    train_v, val_v = np.flatnonzero(vs.folds != 0), np.flatnonzero(vs.folds == 0)
    cfg = get_config("tiny")  # 32 px: layer4's feature map is 1x1
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, batch_size=len(train_v) - 3, steps_per_epoch=None,
                                        sync_batchnorm=False))
    with joined(torch.device("cpu")) as (world, _dev):
        run = pretrain(vs, train_v, val_v, vs.label_ids.copy(), 3, cfg, world=world, spg=True,
                       device=torch.device("cpu"), seed=4)
    # each epoch: one batch of 11; the last 3 videos (2 + 1 a rank) are dropped
    assert [h["steps"] for h in run.history] == [1] * cfg.pretrain.epochs, run.history


def test_a_final_batch_too_small_for_batch_norm_per_rank_is_dropped():
    """With batch norm per rank, a rank's slice of one video has no batch statistics at 1x1:
    such a final batch is dropped, as one of one video is on a single process."""
    frames, videos = synthetic_tables(n_videos=20, frames_per_video=5, size=SIZE, seed=2)
    run_ranks(_per_rank_batchnorm_rank, frames, videos)


# --- the benchmark on 2 ranks: complete outputs, or none ------------------------------------

def _failing_rank(release: Path, out: Path) -> None:
    from us4.train.benchmark import run_benchmark

    def progress(msg: str) -> None:
        if os.environ["RANK"] == "1" and "finetune" in msg:
            raise OSError(28, "No space left on device (on rank 1)")

    run_benchmark(release, release, get_config("tiny"), out, device="cpu", progress=progress)


def test_a_rank_that_raises_ends_the_run_and_leaves_no_outputs(phantom_pocus_release, tmp_path):
    out = tmp_path / "bench"
    with pytest.raises(mp.ProcessRaisedException) as info:
        run_ranks(_failing_rank, phantom_pocus_release, out)
    assert "rank 1 of 2 failed: OSError: [Errno 28] No space left on device (on rank 1)" in str(info.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left beside --out either


def _benchmark_cmd(release: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "us4.cli", "benchmark", "--pretrain", str(release), "--eval", str(release),
            "--config", "tiny", "--out", str(out), "--device", "cpu", *extra]


def test_a_rank_killed_under_torchrun_ends_the_run_with_its_name_and_no_outputs(phantom_pocus_release, tmp_path):
    """kill -9 of rank 1 (what the kernel's OOM killer does) once rank 0 has written a checkpoint
    into its staging folder: the run ends at once, names rank 1 and the signal, and --out is never made."""
    import psutil

    out = tmp_path / "bench"
    proc = subprocess.Popen(_benchmark_cmd(phantom_pocus_release, out, "--nproc", "2"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".bench.staging-*/uscl.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was staged"
            time.sleep(0.05)
        rank1 = [c for c in psutil.Process(proc.pid).children() if _rank_of(c) == "1"]  # ranks: the launcher's own
        assert len(rank1) == 1, rank1
        rank1[0].kill()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("us4: error:") and "rank 1: Signal 9 (SIGKILL)" in last, stderr[-3000:]
    assert not out.exists() and list(tmp_path.iterdir()) == [], (list(tmp_path.rglob("*")), stderr[-3000:])


def _rank_of(process) -> str | None:
    import psutil

    try:
        return process.environ().get("RANK")
    except psutil.Error:  # gone meanwhile
        return None


def test_a_stop_during_cleanup_does_not_cut_it_short(tmp_path):
    """torchrun's SIGTERM can reach a rank already removing its staging folder (after a peer
    died): the removal finishes, and the stop handler is back in place afterwards."""
    import shutil
    import signal

    staging = tmp_path / "staging"
    for i in range(50):
        (staging / f"d{i}").mkdir(parents=True)
        (staging / f"d{i}" / "f").write_bytes(b"x")

    def stop(*_):
        raise RuntimeError("stopped")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with sigterm_held_off():
            os.kill(os.getpid(), signal.SIGTERM)
            shutil.rmtree(staging)
        assert not staging.exists() and signal.getsignal(signal.SIGTERM) is stop
        with pytest.raises(RuntimeError, match="stopped"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_as_cleanup_begins_still_removes_the_staging_folder(tmp_path, monkeypatch):
    """torchrun's SIGTERM landing after a failing rank entered its cleanup but before SIGTERM is
    held off raised there and skipped the removal: the staging folder of a killed run was left
    (seen under load in test_a_rank_killed_under_torchrun...). The removal is begun again."""
    import contextlib

    import us4.train.distributed as distributed

    staging = tmp_path / ".bench.staging-1"
    (staging / "d").mkdir(parents=True)
    (staging / "d" / "uscl.safetensors").write_bytes(b"x")
    held = distributed.sigterm_held_off
    stops = []

    @contextlib.contextmanager
    def stopped_first_time():
        if not stops:  # the signal's handler runs before SIG_IGN is in place
            stops.append(1)
            raise distributed.RankFailed("rank 0 of 2: stopped by SIGTERM")
        with held():
            yield

    monkeypatch.setattr(distributed, "sigterm_held_off", stopped_first_time)
    distributed.remove_held_off(staging)
    assert stops == [1] and not staging.exists() and list(tmp_path.iterdir()) == []


def test_nproc_under_torchrun_is_refused(phantom_pocus_release, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from us4.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun gives each rank
    result = CliRunner().invoke(main, _benchmark_cmd(phantom_pocus_release, tmp_path / "b", "--nproc", "2")[3:])
    assert result.exit_code == 1 and "under torchrun, leave it out" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_us4_benchmark_nproc_2_runs_under_torchrun(phantom_pocus_release, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(_benchmark_cmd(phantom_pocus_release, out, "--nproc", "2"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "benchmark.json").read_text())
    assert record["device"]["world_size"] == 2 and record["device"]["backend"] == "gloo"
    assert record["device"]["sync_batchnorm"] is True
    assert set(record["results"]) == {"uscl", "simclr_no_spg", "random"}
    for r in record["results"].values():  # every fold of every initialisation came back to rank 0
        assert len(r["honest"]["fold_accuracy"]) == 5 and len(r["curves"]["test_accuracy"]) == 5
    assert "rank 1: finetune" in proc.stderr and "ETA" in proc.stderr  # both ranks' progress
    assert proc.stdout.count("## Benchmark") == 1  # one report, from rank 0
    assert sorted(p.name for p in out.iterdir()) == [
        "benchmark.json", "benchmark.md", "finetune_curves.png", "fold_accuracy.png", "pretrain_loss.png",
        "simclr_no_spg.safetensors", "uscl.safetensors"]
    for png in out.glob("*.png"):
        assert min(_png_ok(png)) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]


def test_nproc_passes_every_given_option_to_the_ranks_zero_included(monkeypatch, tmp_path):
    """`--label-fraction 0` (0 == False in Python) once never reached the ranks, which then ran
    fully supervised."""
    from click.testing import CliRunner

    import us4.train.distributed as distributed
    from us4.cli import main

    seen: list[list[str]] = []
    monkeypatch.setattr(distributed, "launch", lambda nproc, argv: seen.append([str(nproc), *argv]))
    release = tmp_path / "rel"
    release.mkdir()
    result = CliRunner().invoke(main, ["benchmark", "--pretrain", str(release), "--eval", str(release), "--out",
                                       str(tmp_path / "b"), "--seed", "0", "--label-fraction", "0", "-q",
                                       "--nproc", "2"])
    assert result.exit_code == 0, result.output
    argv = seen[0]
    assert argv[:2] == ["2", "benchmark"]
    assert argv[argv.index("--seed") + 1] == "0" and argv[argv.index("--label-fraction") + 1] == "0.0"
    assert "--quiet" in argv and "--nproc" not in argv and "--imagenet" not in argv
