"""Data parallelism under torchrun: the ranks of a run, the global batch, synchronised batch
norm, failures, and the launcher behind `us4 benchmark --nproc N`.

A process started by `torchrun` finds WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous address
in its environment and joins the process group (gloo on the CPU, nccl on CUDA); any other
process is rank 0 of 1 and talks to no one. The method does not change with the number of
ranks: the batch size is the global batch, every rank draws the same global batch and takes its
slice, and the loss is computed on the gathered global batch.

Gradient scaling. Every rank computes the same loss L of the whole global batch from the
gathered projections and logits. The gather's backward sums the gradients of all ranks' (equal)
losses and hands each rank its slice, so the gradient reaching rank r's slice is W * dL/dz_r,
and rank r's parameter gradient is W times its share of dL/dtheta. DDP averages parameter
gradients over the W ranks: (1/W) * sum_r W * share_r = dL/dtheta, the single-process gradient.
The loss itself is not rescaled. Synchronised batch norm sums its statistics' gradients the
same way, so the same factor W applies on every path.
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import TrainError, Us4Error
from ..system import COMMAND_STARTED, available_cores, process_started

#: How long a collective waits for the other ranks. A rank that dies is noticed at once (its
#: sockets close, and torchrun stops the others); this bounds one that hangs. Ranks legitimately
#: wait for each other for up to one fine-tuning task, as tasks are dealt round-robin.
TIMEOUT = timedelta(minutes=20)


class RankFailed(TrainError):
    """One rank of a data-parallel run failed; the message names the rank and the cause."""


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None  # gloo or nccl; None for one process

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    def counts(self, n: int) -> list[int]:
        """How many of n items each rank takes: as even as possible, the first ranks one more."""
        return [n // self.size + (r < n % self.size) for r in range(self.size)]

    def part(self, n: int) -> tuple[int, int]:
        """(start, stop) of this rank's consecutive slice of n items; slices follow rank order."""
        counts = self.counts(n)
        start = sum(counts[:self.rank])
        return start, start + counts[self.rank]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise TrainError(f"environment variable {name}={value!r} is not an integer") from None


@contextmanager
def joined(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """This process's place in the run, and its device.

    Under torchrun (WORLD_SIZE > 1) it joins the process group for the duration of the block:
    gloo on the CPU, nccl on CUDA with cuda:LOCAL_RANK as this rank's device. While joined,
    SIGTERM (what torchrun sends the other ranks when one fails) raises RankFailed, so that
    cleanup in `finally` blocks runs.
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        yield World(), device
        return
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    world = World(rank=rank, size=size, local_rank=local_rank, local_size=_env_int("LOCAL_WORLD_SIZE", size),
                  backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(world.backend, timeout=TIMEOUT)

    def stop(signum: int, _frame) -> None:
        raise RankFailed(f"rank {rank} of {size}: stopped by {signal.Signals(signum).name} "
                         "(another rank failed, or the run was stopped)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield world, device
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


@contextmanager
def sigterm_held_off() -> Iterator[None]:
    """SIGTERM ignored for the block. torchrun stops the other ranks while a failing one may be
    removing or renaming its outputs already; a stop raised inside that would leave them half
    done. A block that hangs still ends: torchrun sends SIGKILL 30 s after SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; none of ours runs elsewhere
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_held_off(path: Path) -> None:
    """Remove a rank's folder (its staging outputs) with SIGTERM held off. torchrun's SIGTERM can
    land as a failing rank begins its cleanup, before the signal is held off: the stop it raises
    would skip the removal and leave the folder, so the removal is begun again."""
    while True:
        try:
            with sigterm_held_off():
                shutil.rmtree(path, ignore_errors=True)
            return
        except RankFailed:
            continue


@contextmanager
def rank_errors(world: World) -> Iterator[None]:
    """On more than one rank, any failure becomes RankFailed naming this rank and the cause.

    The original exception (with its traceback) is also written where torchrun collects a
    failed worker's error (TORCHELASTIC_ERROR_FILE), for torchrun's summary and the launcher.
    """
    if world.size == 1:
        yield
        return
    try:
        yield
    except RankFailed:
        raise
    except Exception as exc:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)
        cause = str(exc) if isinstance(exc, Us4Error) else f"{type(exc).__name__}: {exc}"
        raise RankFailed(f"rank {world.rank} of {world.size} failed: {cause}") from exc


# --- the global batch ------------------------------------------------------------------------

class _GatherParts(torch.autograd.Function):
    """All ranks' slices, concatenated in rank order; backward: gradients summed over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        ctx.start, ctx.stop = sum(counts[:rank]), sum(counts[:rank + 1])
        padded = x.new_zeros((max(counts), *x.shape[1:]))  # all_gather wants equal shapes
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.stop], None, None


def gather_batch(x: torch.Tensor, world: World, counts: list[int]) -> torch.Tensor:
    """The global batch from each rank's slice `x` (rank r holds counts[r] items), differentiable.

    Backward returns this rank's slice of the gradient summed over ranks (see the module's note
    on scaling). On one rank, `x` itself.
    """
    if world.size == 1:
        return x
    return _GatherParts.apply(x, counts, world.rank)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks.

    torch.nn.SyncBatchNorm refuses CPU tensors (torch 2.13: "SyncBatchNorm expected input
    tensor to be on GPU"), so gloo runs use this. Each rank's count, mean and sum of squared
    deviations are gathered with gradients (one collective forward, one backward) and combined
    as parallel variance algorithms do (no cancellation). Outside a process group, or in eval
    mode, it is BatchNorm2d; its state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c, dims = x.shape[1], (0, 2, 3)
        local_mean = x.mean(dims)
        local_m2 = (x - local_mean.view(1, -1, 1, 1)).square().sum(dims)
        local = torch.cat([local_mean, local_m2, x.new_full((1,), x.numel() / c)]).unsqueeze(0)
        world = dist.get_world_size()
        ranks = _GatherParts.apply(local, [1] * world, dist.get_rank())  # world x (2c + 1)
        means, m2s, counts = ranks[:, :c], ranks[:, c:2 * c], ranks[:, 2 * c:].detach()
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s + counts * (means - mean).square()).sum(0) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), factor)
        y = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: torch's SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere.

    Layers are replaced in place (the state dict keeps its names and values).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            synchronise_batchnorm(child, device)
    return model


def broadcast_state(module: nn.Module, world: World) -> None:
    """Every rank takes rank 0's parameters and buffers."""
    if world.size > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def broadcast_float(value: float | None, world: World, device: torch.device) -> float | None:
    """Rank 0's value on every rank (None travels as NaN)."""
    if world.size == 1:
        return value
    t = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    v = float(t.item())
    return None if v != v else v


def gather_to_main(obj: object, world: World) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0; None elsewhere."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size if world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


# --- the launcher ----------------------------------------------------------------------------

def launch(nproc: int, argv: list[str]) -> None:
    """Run `us4 ARGV` on `nproc` ranks on this machine, exactly as
    `torchrun --standalone --nproc-per-node NPROC -m us4.cli ARGV` does (torch.distributed.run).

    When a rank fails, torchrun stops the others; this raises RankFailed naming every failed
    rank and its cause (a rank that lost its peer says so: gloo's "Connection closed by peer").
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if _env_int("WORLD_SIZE", 1) > 1:
        raise TrainError("--nproc starts ranks itself: under torchrun, leave it out")
    # the ranks share this machine's cores (torchrun would set 1 and print a banner saying so)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    os.environ[COMMAND_STARTED] = repr(process_started())  # the ranks time from here, whatever the shell had
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--module", "us4.cli", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        causes = "; ".join(f"rank {rank}: {_cause(f)}" for rank, f in sorted(exc.failures.items()))
        raise RankFailed(f"{len(exc.failures)} of {nproc} ranks failed ({causes})") from None


def _cause(failure) -> str:
    message = failure.message
    if isinstance(message, dict):  # written by ErrorHandler.record_exception
        message = message.get("message", "")
    return str(message or f"exit code {failure.exitcode}").strip().splitlines()[-1]


def threads_per_rank(cores: int, world: World) -> int:
    """CPU threads for one rank: the cores shared by the ranks on this machine."""
    return max(1, cores // max(world.local_size, 1))
