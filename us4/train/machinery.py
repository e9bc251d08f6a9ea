"""What every training run needs and no method decides (cf. solo-learn's split of methods and
machinery): the device and thread set-up of a rank, progress lines per rank, the dealing of
tasks to ranks, data-parallel wrapping, the epoch loop with validation-based checkpoint
selection, and the record's files. A method (pretrain.py: USCL's pairs, loss and model) hands in
only what is particular to it: how one epoch trains and how a model is validated.
"""
from __future__ import annotations

import copy
import hashlib
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..contract.benchmark import BenchmarkRecord
from ..contract.benchmark_card import benchmark_markdown
from ..system import available_cores
from .distributed import World, broadcast_float, broadcast_state, synchronise_batchnorm, threads_per_rank

Progress = Callable[[str], None]
T = TypeVar("T")


# --- a rank -----------------------------------------------------------------------------------

def prepare_device(dev: torch.device, world: World) -> None:
    """CPU: this rank's share of the cores; CUDA: deterministic kernels (seeds must make a run
    repeatable on the same device: no autotuned, nondeterministic kernels)."""
    if dev.type == "cpu":
        torch.set_num_threads(threads_per_rank(available_cores(), world))
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class Speakers:
    """Where progress lines go: `all` on every rank, `main` on rank 0 alone, `rank` prefixed with
    the rank where there are several."""

    all: Progress
    main: Progress
    rank: Progress


def speakers(progress: Progress | None, world: World) -> Speakers:
    say = progress or (lambda _msg: None)
    return Speakers(all=say, main=say if world.main else (lambda _msg: None),
                    rank=(lambda msg: say(f"rank {world.rank}: {msg}")) if world.size > 1 else say)


def deal(tasks: Iterable[T], world: World) -> list[T]:
    """This rank's share of `tasks`, dealt round-robin (every rank lists them in the same order)."""
    return list(tasks)[world.rank::world.size]


# --- a model over epochs ----------------------------------------------------------------------

def data_parallel(model: torch.nn.Module, world: World, device: torch.device, *,
                  sync_batchnorm: bool) -> torch.nn.Module:
    """The module a training step calls: `model` itself alone, else wrapped for DDP."""
    if world.size == 1:
        return model
    if sync_batchnorm:
        synchronise_batchnorm(model, device)
    # buffers (batch-norm running statistics) follow rank 0's at each forward with local batch
    # norm, else they would drift apart; synchronised batch norm keeps them equal without that
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=not sync_batchnorm)


@dataclass
class EpochResult:
    """What a method's epoch returns: its summed losses (one tensor, on the device: no host sync
    per step), the steps taken and the images seen."""

    sums: torch.Tensor
    steps: int
    images: int


@dataclass
class Fit:
    """The epoch loop's account: one history entry per epoch, the epoch selected and why."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float | None = None
    selection: str = ""
    wall_s: float = 0.0
    images_per_s: float = 0.0


def fit(model: torch.nn.Module, net: torch.nn.Module, opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler, *, epochs: int, warmup_epochs: int,
        train_epoch: Callable[[int], EpochResult], validate: Callable[[], float | None], terms: tuple[str, ...],
        describe: Callable[[list[float]], str], world: World, device: torch.device,
        progress: Progress | None = None, stage: str = "") -> Fit:
    """Train `net` (`model`, or its DDP wrapper) for `epochs`; after each, rank 0 validates and
    the lowest validation loss keeps a copy of the weights, which `model` holds at the end (the
    final epoch's where validation gives nothing). The scheduler steps after the warm-up epochs
    only (the reference keeps lr constant for them). `terms` name the summed losses in the
    history; `describe` makes the progress line's loss part of their means."""
    out = Fit()
    best_state, best = None, float("inf")
    seen, train_time = 0, 0.0
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        t0 = time.perf_counter()
        done = train_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        seen += done.images
        val = broadcast_float(validate() if world.main else None, world, device)
        lr = opt.param_groups[0]["lr"]
        if epoch >= warmup_epochs:
            sched.step()
        mean = (done.sums / max(done.steps, 1)).tolist()
        rate = done.images / epoch_time if epoch_time > 0 else 0.0
        out.history.append({"epoch": epoch, **dict(zip(terms, mean)), "val_loss": val, "lr": lr,
                            "steps": done.steps, "images_per_s": rate})
        if val is not None and val < best:
            best = val
            best_state = copy.deepcopy(model.state_dict())
            out.best_epoch, out.best_val_loss = epoch, val
        if progress:
            progress(f"{stage} epoch {epoch + 1}/{epochs}: {describe(mean)}, "
                     f"val {'-' if val is None else f'{val:.4f}'}, {rate:.0f} images/s")
    if best_state is not None:
        model.load_state_dict(best_state)
        out.selection = "lowest validation contrastive loss"
    else:
        out.best_epoch = epochs - 1
        out.selection = "final epoch (fewer than 2 validation videos)"
    out.wall_s = time.perf_counter() - start
    out.images_per_s = seen / train_time if train_time > 0 else 0.0
    return out


def rank0_model(model: torch.nn.Module, world: World, plain: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`model` as rank 0 holds it, on every rank; several ranks get it in a `plain()` module
    (plain batch norm, as the single-process model)."""
    if world.size == 1:
        return model
    broadcast_state(model, world)
    out = plain()
    out.load_state_dict(model.state_dict())
    return out


# --- the record -------------------------------------------------------------------------------

def code_sha256(folder: Path = Path(__file__).parent) -> str:
    """The trainer's code, named by content (every module of `folder`)."""
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def environment(device: torch.device) -> dict:
    """The versions and the machine a run's figures came from."""
    import PIL
    import pyarrow
    import safetensors
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
           "pyarrow": pyarrow.__version__, "pillow": PIL.__version__, "safetensors": safetensors.__version__,
           "platform": platform.platform(), "machine": platform.machine(), "cpus": available_cores(),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def jsonable(x):
    """Plain JSON values of numpy ones; a non-finite float is null."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_record(record: BenchmarkRecord, out: Path) -> None:
    """benchmark.json, benchmark.md (the card's section) and the plots, into `out`."""
    from .plots import write_plots

    (out / "benchmark.json").write_text(record.dump())
    (out / "benchmark.md").write_text(benchmark_markdown(record))
    write_plots(record, out)
