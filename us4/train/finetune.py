"""The POCUS fine-tuning protocol over video-level folds, and its two readings.

Per fold: train on the other folds (each epoch on all training frames, or on the first
`finetune.steps_per_epoch` batches of that epoch's shuffle), test on the held-out fold after
every epoch.
Only the last BasicBlock of layer4 and a new Linear(512, classes) train (reference
`eval_pretrained_model.py`); Adam, cosine annealing over the epochs.

- optimistic (the reference's figure): per fold, the best test accuracy over epochs,
  confusion matrices of those epochs summed. Test labels pick the epoch.
- honest: the final epoch of every fold; nothing is chosen on the test fold.

The frozen trunk runs in eval mode with its batch-norm statistics re-estimated on the
fold's training frames (the reference leaves it in train mode, so its running
statistics drift to the same data). That makes the trunk a fixed function per fold,
so without augmentation its features are computed once and only the trained block
runs per step.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainError
from .augment import augment, normalise
from .config import AugmentConfig, BenchmarkConfig
from .data import VideoSet
from .metrics import accuracy, confusion_matrix
from .resnet import FEATURE_DIM, LAYER4, USCLModel, as_input
from .runtime import adam, autocast

Progress = Callable[[str], None]
_INFER_BATCH = 128


@dataclass
class FoldResult:
    fold: int
    train_videos: list[str]
    test_videos: list[str]
    n_train_frames: int
    n_test_frames: int
    train_loss: list[float] = field(default_factory=list)  # per epoch
    test_accuracy: list[float] = field(default_factory=list)  # per epoch
    best_epoch: int = -1  # first epoch of the best test accuracy
    optimistic_confusion: np.ndarray | None = None
    honest_confusion: np.ndarray | None = None
    wall_s: float = 0.0


def class_labels(vs: VideoSet, classes: tuple[str, ...]) -> np.ndarray:
    """Class index per video by the `label` name; -1 for videos of other classes (left out)."""
    index = {name: k for k, name in enumerate(classes)}
    labels = np.array([index.get(name, -1) for name in vs.label_names], dtype=np.int64)
    missing = [c for c in classes if c not in set(vs.label_names)]
    if missing:
        raise TrainError(f"evaluation release has no videos of class {', '.join(missing)}")
    return labels


def check_folds(vs: VideoSet, videos: np.ndarray, n_folds: int) -> None:
    """Every evaluated video has a fold in 0..n_folds-1, and no clip sits in two folds."""
    folds = vs.folds[videos]
    if (folds < 0).any() or (folds >= n_folds).any():
        bad = [vs.video_ids[v] for v in videos[(folds < 0) | (folds >= n_folds)]][:3]
        raise TrainError(f"evaluation release: videos without a fold in 0..{n_folds - 1} ({', '.join(bad)} ...)")
    seen: dict[str, int] = {}
    for v in videos:
        for key in (vs.video_ids[v], vs.clip_sha256[v]):
            if key and seen.setdefault(key, vs.folds[v]) != vs.folds[v]:
                raise TrainError(f"evaluation release: {key} is in folds {seen[key]} and {vs.folds[v]}; "
                                 "a video must sit in one fold only")
    present = set(folds.tolist())
    if len(present) < n_folds:
        raise TrainError(f"evaluation release has videos in folds {sorted(present)} only; {n_folds} needed")


def fold_split(vs: VideoSet, videos: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training videos, test videos) of one fold: a video is in exactly one of them."""
    test = videos[vs.folds[videos] == fold]
    train = videos[vs.folds[videos] != fold]
    return train, test


def split_trunk(model: USCLModel) -> tuple[nn.Sequential, nn.Module]:
    """(frozen trunk: everything before layer4's last block, trained block: layer4's last block)."""
    f = model.features
    trunk = nn.Sequential(*[f[i] for i in range(LAYER4)], f[LAYER4][0])
    return trunk, f[LAYER4][1]


@torch.no_grad()
def recalibrate_bn(trunk: nn.Module, images: torch.Tensor, aug: AugmentConfig, channels_last: bool) -> None:
    """Re-estimate every batch-norm layer's statistics on `images` (cumulative average), then eval mode."""
    for m in trunk.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    trunk.train()
    for start in range(0, len(images), _INFER_BATCH):
        chunk = images[start:start + _INFER_BATCH]
        if len(chunk) > 1:
            trunk(as_input(normalise(chunk, aug), channels_last))
    trunk.eval()


@torch.no_grad()
def trunk_features(trunk: nn.Module, images: torch.Tensor, cfg: BenchmarkConfig, device: torch.device,
                   channels_last: bool) -> torch.Tensor:
    out = []
    for start in range(0, len(images), _INFER_BATCH):
        with autocast(device, cfg.bf16_autocast):
            out.append(trunk(as_input(normalise(images[start:start + _INFER_BATCH], cfg.augment),
                                      channels_last)).float())
    return torch.cat(out)


def finetune_fold(vs: VideoSet, videos: np.ndarray, labels: np.ndarray, fold: int, backbone: dict | None,
                  cfg: BenchmarkConfig, *, device: torch.device, seed: int, progress: Progress | None = None,
                  name: str = "", epochs: int | None = None) -> FoldResult:
    """Fine-tune one fold. `backbone`: a `features` state dict (None: random initialisation
    drawn from `seed`); `labels`: class index per video of `vs`."""
    fc = cfg.finetune
    n_epochs = fc.epochs if epochs is None else epochs
    channels_last = cfg.channels_last and device.type == "cuda"
    t_start = time.perf_counter()
    train_v, test_v = fold_split(vs, videos, fold)
    train_rows, train_owner = vs.rows_of(train_v)
    test_rows, test_owner = vs.rows_of(test_v)
    images = vs.images.to(device)
    y_train = torch.as_tensor(labels[train_owner], device=device)
    y_test = labels[test_owner]

    torch.manual_seed(seed)  # random init is the same on every fold; the new linear layer too
    model = USCLModel()
    if backbone is not None:
        model.features.load_state_dict(backbone)
    model = model.to(device)
    if channels_last:
        model = model.use_channels_last()
    trunk, block = split_trunk(model)
    head = nn.Linear(FEATURE_DIM, len(fc.classes)).to(device)
    trunk.requires_grad_(False)

    train_idx = torch.as_tensor(train_rows, device=device)
    test_idx = torch.as_tensor(test_rows, device=device)
    # shuffled, so that each batch mixes videos as a training batch does: the running variance
    # averages per-batch variances, which batches of one video would underestimate
    pick = np.random.default_rng(seed + 3).permutation(len(train_idx))[:fc.bn_frames]
    recalibrate_bn(trunk, images[train_idx[torch.as_tensor(pick, device=device)]], cfg.augment, channels_last)
    # the trunk is a fixed function within a fold: test features once, training ones too unless augmented
    test_feats = trunk_features(trunk, images[test_idx], cfg, device, channels_last)
    train_feats = None if fc.augment else trunk_features(trunk, images[train_idx], cfg, device, channels_last)
    # the reference fine-tunes with resized crops and flips only, no brightness/contrast jitter
    g = torch.Generator(device=device).manual_seed(seed + 1)
    rng = np.random.default_rng(seed + 2)

    params = list(block.parameters()) + list(head.parameters())
    opt = adam(params, fc.lr, fc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs, eta_min=0)

    def classify(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.bf16_autocast):
            return head(torch.flatten(F.adaptive_avg_pool2d(block(x), 1), 1)).float()

    def test_predictions() -> np.ndarray:
        block.eval()
        preds = []
        with torch.no_grad():
            for start in range(0, len(test_rows), _INFER_BATCH):
                preds.append(classify(test_feats[start:start + _INFER_BATCH]).argmax(1).cpu())
        return torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)

    result = FoldResult(fold=fold, train_videos=[vs.video_ids[v] for v in train_v],
                        test_videos=[vs.video_ids[v] for v in test_v],
                        n_train_frames=len(train_rows), n_test_frames=len(test_rows))
    best_acc = -1.0
    n_cls = len(fc.classes)
    per_epoch = None if fc.steps_per_epoch is None else fc.steps_per_epoch * fc.batch_size
    for epoch in range(n_epochs):
        block.train()
        t_epoch = time.perf_counter()
        order = rng.permutation(len(train_rows))[:per_epoch]
        loss_sum, steps, frames = torch.zeros((), device=device), 0, 0  # summed on the device: no sync per step
        for start in range(0, len(order), fc.batch_size):
            pick = order[start:start + fc.batch_size]
            if len(pick) < 2:  # batch norm cannot train on a batch of one
                continue
            pick_t = torch.as_tensor(pick, device=device)
            if train_feats is not None:
                x = train_feats[pick_t]
            else:
                with torch.no_grad(), autocast(device, cfg.bf16_autocast):
                    x = trunk(as_input(augment(images[train_idx[pick_t]], cfg.augment, g, colour=False),
                                       channels_last)).float()
            loss = F.cross_entropy(classify(x), y_train[pick_t])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            steps += 1
            frames += len(pick)
        sched.step()
        cm = confusion_matrix(y_test, test_predictions(), n_cls)
        acc = accuracy(cm)
        result.train_loss.append(float(loss_sum) / steps if steps else float("nan"))
        result.test_accuracy.append(acc)
        if acc > best_acc:
            best_acc, result.best_epoch, result.optimistic_confusion = acc, epoch, cm
        result.honest_confusion = cm
        if progress:
            seconds = time.perf_counter() - t_epoch
            progress(f"finetune {name} fold {fold} epoch {epoch + 1}/{n_epochs}: "
                     f"loss {result.train_loss[-1]:.4f}, test acc {acc:.3f}, "
                     f"{frames / seconds if seconds > 0 else 0:.0f} images/s")
    result.wall_s = time.perf_counter() - t_start
    return result


def evaluated_videos(vs: VideoSet, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """(class index per video, the videos evaluated) of an evaluation release, checked: every
    class present, every evaluated video in one fold, every fold present."""
    labels = class_labels(vs, cfg.finetune.classes)
    videos = np.flatnonzero(labels >= 0)
    check_folds(vs, videos, cfg.finetune.folds)
    return labels, videos


def finetune_folds(vs: VideoSet, backbone: dict | None, cfg: BenchmarkConfig, *, device: torch.device,
                   seed: int, progress: Progress | None = None, name: str = "",
                   epochs: int | None = None, folds: Sequence[int] | None = None) -> list[FoldResult]:
    """The protocol's folds (all of them, or those of `folds`) for one initialisation.

    Each fold is independent and seeded alike, so it is the same computation whichever
    process runs it (data-parallel runs deal the folds out to the ranks).
    """
    labels, videos = evaluated_videos(vs, cfg)
    return [finetune_fold(vs, videos, labels, k, backbone, cfg, device=device, seed=seed, progress=progress,
                          name=name, epochs=epochs)
            for k in (range(cfg.finetune.folds) if folds is None else folds)]
