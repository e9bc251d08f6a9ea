"""Every hyper-parameter of a benchmark run, one frozen dataclass per setting.

`benchmark.json` records the chosen config in full (`dataclasses.asdict`), so a
figure can always be traced to the exact settings that produced it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

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
    # videos per optimisation step over all ranks (the global batch; each video gives two views).
    # Under torchrun every rank takes its slice of it, so the method's batch does not depend on the ranks.
    batch_size: int = 32
    # at most this many steps per epoch (None: one pass over the training videos, as the reference).
    # A bound keeps a run's cost fixed as the release grows; each epoch then takes the first
    # steps_per_epoch batches of that epoch's permutation of the videos.
    steps_per_epoch: int | None = None
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 10  # cosine annealing steps only after these (constant lr before)
    temperature: float = 0.5
    ce_weight: float = 0.2  # per view, on labelled videos
    mix_alpha: float = 0.5  # lam ~ Beta(alpha, alpha)
    label_fraction: float = 1.0
    holdout_fold: int = 0  # validation videos when the pretrain release has folds, not train/validation
    # with more than one rank, batch-norm statistics of the global batch (synchronised across ranks) rather
    # than of each rank's slice: the single-process method, and no rank-local statistics that let
    # positives be told from negatives gathered from other ranks (SimCLR's "global BN"). On by default
    # for that; its price is latency, one small collective per layer and view each way (cheap on nccl;
    # on CPU gloo ranks `benchmarks/scale.py` prints images/s with and without it).
    sync_batchnorm: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    """POCUS fine-tuning (reference `eval_pretrained_model.py`)."""

    epochs: int = 100
    batch_size: int = 32
    # at most this many steps per epoch (None: every training frame of the fold, as the reference);
    # each epoch then trains on the first steps_per_epoch batches of that epoch's shuffle of the frames
    steps_per_epoch: int | None = None
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
    # end to end on a 2-core CPU in minutes: small input, few epochs, features of the frozen trunk
    # cached per fold, and a fixed number of steps per epoch, so that a bigger release costs little
    # more (only decoding, validation and test-fold inference grow with it). On the POCUS sample
    # (48 training videos, about 870 training frames a fold) the bounds cut nothing from pretraining
    # and fine-tuning trains on about 60 % of a fold's frames per epoch. Figures are a smoke signal,
    # not the paper's.
    "smoke": BenchmarkConfig(
        name="smoke",
        input_size=64,
        seed=0,
        pretrain=PretrainConfig(epochs=40, batch_size=16, steps_per_epoch=3, warmup_epochs=10),
        finetune=FinetuneConfig(epochs=8, steps_per_epoch=16, augment=False, bn_frames=256),
    ),
    # every stage of the run in seconds (tests, a first try of the command): figures mean nothing
    "tiny": BenchmarkConfig(
        name="tiny",
        input_size=32,
        seed=0,
        pretrain=PretrainConfig(epochs=2, batch_size=8, steps_per_epoch=2, warmup_epochs=1),
        finetune=FinetuneConfig(epochs=2, batch_size=16, steps_per_epoch=2, augment=False, bn_frames=32),
    ),
}

#: The published POCUS figures that a benchmark is set beside, and the setting they come from.
#: The one place they are written down; benchmark.json copies them into its `comparison`.
PUBLISHED = {
    "figures": [
        {"initialisation": "uscl", "accuracy": 0.9419, "approximate": False,
         "source": "USCL, Chen et al., MICCAI 2021 (arXiv 2011.13066); the released model's log says 95.42 %"},
        {"initialisation": "imagenet", "accuracy": 0.84, "approximate": True,
         "source": "ImageNet-pretrained ResNet-18 in the same evaluation: about 84-85 %"},
    ],
    "setting": {
        "input_size": 224,
        "pretraining_corpus": "US-4: 1051 videos, about 23,000 frames of lung and liver ultrasound "
                              "(butterfly, clust, liver_fibrosis, covid19_lusms); no POCUS video",
        "pretraining": "300 epochs, batch 32, one pass over the videos per epoch",
        "evaluation": "POCUS, 2116 frames (655 covid, 349 pneumonia, 1112 regular), 5 video-level folds",
        "fine_tuning": "100 epochs, batch 32, every training frame per epoch, resized crop + flip",
        "protocol": "per fold the best test-fold accuracy over epochs, confusion matrices summed (optimistic)",
    },
}


def config_differences(cfg: BenchmarkConfig) -> list[str]:
    """Every setting in which `cfg` departs from the paper's (`CONFIGS["paper"]`), as `key: ours (paper ...)`."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    ours, paper = flat(asdict(cfg)), flat(asdict(CONFIGS["paper"]))
    return [f"{k}: {ours[k]} (paper {paper[k]})" for k in ours if k != "name" and ours[k] != paper[k]]


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
