"""Every hyper-parameter of a benchmark run, one frozen dataclass per setting.

`benchmark.json` records the chosen config in full (`dataclasses.asdict`), so a
figure can always be traced to the exact settings that produced it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import TrainError


@dataclass(frozen=True)
class AugmentConfig:
    """Batched augmentations (`augment.py`); the reference's values unless said."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    flip_p: float = 0.5
    # reference: ColorJitter(0.8, 0.8, ...) on RGB copies of grey frames; saturation and hue are no-ops there
    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    mean: float = 0.5
    std: float = 0.25


@dataclass(frozen=True)
class PretrainConfig:
    """USCL pretraining (reference `train_USCL/config.yaml` and `simclr.py`)."""

    epochs: int = 300
    batch_size: int = 32  # videos per step; each gives two views
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 10  # cosine annealing steps only after these (constant lr before)
    temperature: float = 0.5
    ce_weight: float = 0.2  # per view, on labelled videos
    mix_alpha: float = 0.5  # lam ~ Beta(alpha, alpha)
    label_fraction: float = 1.0
    holdout_fold: int = 0  # validation videos when the pretrain release has folds, not train/validation


@dataclass(frozen=True)
class FinetuneConfig:
    """POCUS fine-tuning (reference `eval_pretrained_model.py`)."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-4
    # reference train transform: resized crop + flip, no jitter. Off, the frozen trunk's
    # features are computed once per fold and only the trained block runs per step.
    augment: bool = True
    # frames of the fold's training set that re-estimate the frozen trunk's batch-norm statistics
    # (None: all); a few hundred pin them down as well as a thousand
    bn_frames: int | None = None
    classes: tuple[str, ...] = ("covid", "pneumonia", "regular")
    folds: int = 5


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str
    input_size: int
    seed: int
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    bf16_autocast: bool = False  # CUDA only
    channels_last: bool = False  # CUDA only


CONFIGS: dict[str, BenchmarkConfig] = {
    # the paper's setting, meant for a GPU
    "paper": BenchmarkConfig(
        name="paper",
        input_size=224,
        seed=0,
        pretrain=PretrainConfig(),
        finetune=FinetuneConfig(),
        bf16_autocast=True,
        channels_last=True,
    ),
    # end to end on a 2-core CPU in a few minutes on the POCUS sample: small input, few epochs,
    # features of the frozen trunk cached per fold. Figures are a smoke signal, not the paper's.
    "smoke": BenchmarkConfig(
        name="smoke",
        input_size=64,
        seed=0,
        pretrain=PretrainConfig(epochs=40, batch_size=16, warmup_epochs=10),
        finetune=FinetuneConfig(epochs=8, augment=False, bn_frames=256),
    ),
}


def get_config(name: str, *, seed: int | None = None, label_fraction: float | None = None) -> BenchmarkConfig:
    """A named setting, with the command line's overrides applied."""
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise TrainError(f"unknown benchmark config {name!r}; known: {', '.join(CONFIGS)}") from None
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if label_fraction is not None:
        if not 0.0 <= label_fraction <= 1.0:
            raise TrainError(f"--label-fraction must lie in [0, 1], not {label_fraction}")
        cfg = replace(cfg, pretrain=replace(cfg.pretrain, label_fraction=label_fraction))
    return cfg
