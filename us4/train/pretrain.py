"""USCL pretraining, and the no-SPG (SimCLR-style) baseline as a flag of the same trainer.

Loss = NT-Xent(view1, view2) + ce_weight * (CE(view1) + CE(view2)) on labelled videos (NT-Xent
alone where ce_weight is 0 or no training video has a label: `loss_name` says which);
Adam, cosine annealing stepped only after the warm-up epochs; the validation
contrastive loss on held-out videos (unmixed views, fixed draws) picks the checkpoint.

Data-parallel (`distributed.py`): the batch size is the global batch. Every rank draws the
same epoch permutation and the same sample pairs from (seed, epoch), augments its slice with
the global batch's random draws, and computes the loss of the gathered global batch; with
synchronised batch norm a step on N ranks is the single-process step up to float rounding
(which later steps amplify, as they do between one process's runs on 1 and 2 threads).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import augment
from .config import BenchmarkConfig
from .data import VideoSet
from .distributed import World, gather_batch
from .losses import nt_xent, semi_supervised_ce
from .machinery import EpochResult, data_parallel, fit, rank0_model
from .resnet import USCLModel
from .runtime import adam, autocast
from .spg import PairBatch, epoch_batches, make_views, sample_rows

Progress = Callable[[str], None]
Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PretrainResult:
    model: USCLModel  # with the selected (best validation) weights
    spg: bool
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    best_epoch: int = -1
    best_val_loss: float | None = None
    selection: str = ""
    loss: str = ""  # the loss as used (`loss_name`)
    wall_s: float = 0.0
    images_per_s: float = 0.0
    first_step_at: float | None = None  # time.time() as the first training step began


def step_losses(model: torch.nn.Module, v1: torch.Tensor, v2: torch.Tensor, labels: torch.Tensor,
                mask: torch.Tensor, cfg: BenchmarkConfig, gather: Gather | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, contrastive, supervised) loss of one batch of view pairs.

    Each view goes through the model on its own, as in the reference, so batch norm
    statistics never mix the two views of a video. With `gather` (data-parallel), `v1`, `v2`
    are this rank's slice, `gather` turns its projections and logits into the global batch's,
    and `labels`, `mask` are the global batch's: the loss is that of the global batch.
    """
    _, z1, c1 = model(v1)
    _, z2, c2 = model(v2)
    if gather is not None:
        z1, z2, c1, c2 = (gather(t) for t in (z1, z2, c1, c2))
    contrastive = nt_xent(z1, z2, cfg.pretrain.temperature)
    supervised = semi_supervised_ce(c1, labels, mask) + semi_supervised_ce(c2, labels, mask)
    return contrastive + cfg.pretrain.ce_weight * supervised, contrastive, supervised


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, v1: torch.Tensor, v2: torch.Tensor,
               labels: torch.Tensor, cfg: BenchmarkConfig, device: torch.device,
               gather: Gather | None = None) -> torch.Tensor:
    """One optimisation step on a batch of view pairs; returns the detached losses
    (total, contrastive, supervised) stacked in one tensor, so summing them needs no host sync.
    `gather` as in `step_losses`."""
    with autocast(device, cfg.bf16_autocast):
        loss, con, sup = step_losses(model, v1, v2, labels, labels >= 0, cfg, gather)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss.detach(), con.detach(), sup.detach()]).float()


@torch.no_grad()
def validation_loss(model: USCLModel, images: torch.Tensor, members: list[np.ndarray], videos: np.ndarray,
                    cfg: BenchmarkConfig, *, spg: bool, seed: int, device: torch.device) -> float | None:
    """Mean NT-Xent over batches of held-out videos, unmixed views, the same draws every call.

    None when fewer than 2 videos (no negatives).
    """
    if len(videos) < 2:
        return None
    rng = np.random.default_rng(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = np.asarray(videos, dtype=np.int64)
    bs = cfg.pretrain.batch_size
    for start in range(0, len(order), bs):
        chunk = order[start:start + bs]
        if len(chunk) < 2:
            continue
        batch = sample_rows(members, chunk, rng, spg=spg, alpha=cfg.pretrain.mix_alpha)
        v1, v2 = make_views(images, batch, lambda x: augment(x, cfg.augment, g), mix=False)
        with autocast(device, cfg.bf16_autocast):
            _, z1, _ = model(v1)
            _, z2, _ = model(v2)
        total += float(nt_xent(z1, z2, cfg.pretrain.temperature)) * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return total / count if count else None


def loss_name(cfg: BenchmarkConfig, labelled_videos: int) -> str:
    """The pretraining loss as used: the CE term counts only with a weight and labelled training videos."""
    if cfg.pretrain.ce_weight == 0 or labelled_videos == 0:
        return "NT-Xent"
    return f"NT-Xent + {cfg.pretrain.ce_weight:g} x semi-supervised CE"


def label_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which videos keep their label: a deterministic `fraction` of those that have one."""
    known = np.flatnonzero(labels >= 0)
    keep = np.zeros(len(labels), dtype=bool)
    n_keep = round(fraction * len(known))
    keep[np.random.default_rng(seed).permutation(known)[:n_keep]] = True
    return keep


def pretrain(vs: VideoSet, train_videos: np.ndarray, val_videos: np.ndarray, labels: np.ndarray,
             num_classes: int, cfg: BenchmarkConfig, *, spg: bool, device: torch.device, seed: int,
             progress: Progress | None = None, name: str = "uscl",
             epochs: int | None = None, world: World = World()) -> PretrainResult:
    """Pretrain a USCLModel on `train_videos` of `vs`; `labels` per video, -1 = unlabelled.

    `spg=False` is the baseline: two augmentations of one frame per video, nothing mixed;
    everything else (loss, labels, schedule, selection) is identical. `epochs` overrides
    the config (tests). With `world` of several ranks (each process of a torchrun run calls
    this with the same arguments), training is data-parallel; rank 0 computes the validation
    loss, and every rank returns rank 0's selected model. What is USCL's is here (the model,
    sample pair generation, the loss); the loop, selection and DDP are `machinery.fit`'s.
    """
    pc = cfg.pretrain
    n_epochs = pc.epochs if epochs is None else epochs
    torch.manual_seed(seed)  # same initial weights for every variant of a run
    model = USCLModel(num_classes).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.use_channels_last()
    net = data_parallel(model, world, device, sync_batchnorm=pc.sync_batchnorm)
    images = vs.images.to(device)
    labels_t = torch.as_tensor(labels, dtype=torch.int64, device=device)
    g = torch.Generator(device=device).manual_seed(seed + 2)  # the same on every rank: global draws
    opt = adam(model.parameters(), pc.lr, pc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs, eta_min=0)
    loss = loss_name(cfg, int((labels[train_videos] >= 0).sum()))
    # every rank needs a video of a batch; with batch norm per rank, two (one value per channel
    # is no batch statistic where the last feature map is 1x1)
    min_batch = max(2, world.size * (1 if pc.sync_batchnorm or world.size == 1 else 2))
    first_step: list[float] = []

    def train_epoch(epoch: int) -> EpochResult:
        sums, steps, seen = torch.zeros(3, device=device), 0, 0
        rng = np.random.default_rng([seed + 1, epoch])  # the epoch's permutation and pairs, the same on every rank
        for videos in epoch_batches(train_videos, pc.batch_size, rng, max_steps=pc.steps_per_epoch,
                                    min_size=min_batch):
            batch: PairBatch = sample_rows(vs.members, videos, rng, spg=spg, alpha=pc.mix_alpha)
            lo, hi = world.part(len(videos))
            counts = world.counts(len(videos))
            v1, v2 = make_views(images, batch.part(lo, hi),
                                lambda x: augment(x, cfg.augment, g, of_batch=(3 * lo, 3 * len(videos))))
            if not first_step:
                first_step.append(time.time())
            sums += train_step(net, opt, v1, v2, labels_t[torch.as_tensor(batch.videos, device=device)], cfg,
                               device, gather=lambda t: gather_batch(t, world, counts))
            steps += 1
            seen += 2 * len(videos)
        return EpochResult(sums, steps, seen)

    def describe(mean: list[float]) -> str:
        terms = f" (NT-Xent {mean[1]:.4f}, CE {mean[2]:.4f})" if loss != "NT-Xent" else ""
        return f"{loss} {mean[0]:.4f}{terms}"

    done = fit(model, net, opt, sched, epochs=n_epochs, warmup_epochs=pc.warmup_epochs, train_epoch=train_epoch,
               validate=lambda: validation_loss(model, images, vs.members, val_videos, cfg, spg=spg, seed=seed + 3,
                                                device=device),
               terms=("loss", "contrastive", "supervised"), describe=describe, world=world, device=device,
               progress=progress, stage=f"pretrain {name}")
    return PretrainResult(model=rank0_model(model, world, lambda: USCLModel(num_classes).to(device)), spg=spg,
                          history=done.history, best_epoch=done.best_epoch, best_val_loss=done.best_val_loss,
                          selection=done.selection, loss=loss, wall_s=done.wall_s, images_per_s=done.images_per_s,
                          first_step_at=first_step[0] if first_step else None)
