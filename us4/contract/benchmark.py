"""The benchmark record (`benchmark.json`): what `us4 benchmark` writes and a release may carry
as an attachment, typed once here. The trainer builds it, the card and the plots read it, and
a record read from disk is validated first (`read_benchmark`), so a damaged or foreign file is
one line naming the field, never a KeyError halfway through a card.

Fields added after the first records (`us4-benchmark/1` of us4 0.1.0 and 0.2.0) are optional:
such a record still reads, and the card leaves out what it does not hold.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError, model_validator

from ..errors import ReleaseError
from .lock import _explain

__all__ = ["BENCHMARK_FORMAT", "MAX_BENCHMARK_BYTES", "BenchmarkRecord", "read_benchmark"]

BENCHMARK_FORMAT = "us4-benchmark/1"
#: far above any record (the smoke config's is 60 kB; the paper's 300 epochs and 100 fine-tuning
#: epochs over 5 folds some 0.5 MB): a larger file is no record, and is not parsed
MAX_BENCHMARK_BYTES = 16 << 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """A part written from a structure defined elsewhere (the trainer's config, the paper's
    setting): the fields the card reads are typed, the rest are kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Code(_Record):
    us4: str
    train_code_sha256: str


class StageConfig(_Open):
    epochs: int


class Config(_Open):
    """`dataclasses.asdict` of the trainer's BenchmarkConfig."""

    name: str
    input_size: int
    seed: int
    pretrain: StageConfig
    finetune: StageConfig


class Device(_Record):
    type: str
    bf16_autocast: bool
    channels_last: bool
    cudnn_deterministic: bool
    world_size: int = 1
    backend: str | None = None
    sync_batchnorm: bool = False
    global_batch: int | None = None


class Seeds(_Record):
    """Every seed a run used, each drawn from `base` by the trainer."""

    base: int
    pretrain_model: int
    pretrain_sampling: int
    pretrain_augment: int
    pretrain_validation: int
    label_mask: int
    finetune: int
    finetune_augment: int
    finetune_shuffle: int
    finetune_bn_frames: int


class WallTimes(RootModel[dict[str, float]]):
    """Seconds of each stage and initialisation by name, in the order they ran, and of the whole run
    (`total`, last)."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _has_total(self) -> WallTimes:
        if "total" not in self.root:
            raise ValueError("no 'total' wall time")
        return self

    @property
    def total(self) -> float:
        return self.root["total"]


class Verified(_Record):
    files: int
    problems: int
    notes: list[str]


class ReleaseUsed(_Record):
    name: str
    version: str
    phantom: bool = False  # (absent from the first records) fields in the order written
    lock_sha256: str
    split_rule: str | None = None
    verified: Verified | None = None


class Releases(_Record):
    pretrain: ReleaseUsed
    eval: ReleaseUsed


class TrainValidation(_Record):
    train: int
    validation: int


class Epoch(_Record):
    epoch: int
    loss: float | None
    contrastive: float | None
    supervised: float | None
    val_loss: float | None
    lr: float
    steps: int
    images_per_s: float


class Variant(_Record):
    """One pretrained initialisation: its checkpoint and how it was selected."""

    spg: bool
    best_epoch: int
    best_val_loss: float | None
    selection: str
    wall_s: float
    images_per_s: float
    checkpoint: str
    checkpoint_sha256: str
    history: list[Epoch]


class Sides(_Record):
    pretrain: int
    eval: int


class FrameRef(_Record):
    video_id: str
    frame_index: int
    split: str


class FramePair(_Record):
    distance: int
    difference: float
    pretrain: FrameRef
    eval: FrameRef


class Measure(_Record):
    max_distance_bits: int
    max_mean_difference: float


class Disjointness(_Record):
    """`us4 audit PRETRAIN --against EVAL` before training; "same release" has no figures."""

    status: Literal["disjoint", "leaked", "same release"]
    statement: str
    frames: Sides | None = None
    frame_pairs_compared: int | None = None
    candidate_pairs_checked: int | None = None
    pairs_found: int | None = None
    identical_pairs: int | None = None
    blank_pairs_not_counted: int | None = None
    videos_sharing_frames: Sides | None = None
    measure: Measure | None = None
    first_pairs: list[FramePair] = []
    reused: bool | None = None  # read back from an earlier run's audit of the same two locks (the frame cache folder)


class Pretraining(_Record):
    videos: TrainValidation
    frames: TrainValidation
    holdout: str
    label_source: str
    classifier_classes: list[str] | int  # an int (how many) in records of us4 0.2.0 and before
    loss: str | None = None
    label_fraction: float
    labelled_videos: int
    videos_in_eval_release: int
    note: str
    variants: dict[str, Variant]
    audit: Disjointness | None = None


class Fold(_Record):
    fold: int
    test_videos: int
    test_frames: int
    train_videos: int
    train_frames: int


class ClassCounts(_Record):
    """Videos and frames of each class in each evaluation fold."""

    videos: dict[str, list[int]]
    frames: dict[str, list[int]]
    warnings: list[str]


class Evaluation(_Record):
    classes: list[str]
    protocol: str
    folds: list[Fold]
    class_counts: ClassCounts | None = None
    std: str


class ClassFigures(_Record):
    precision: float
    recall: float
    f1: float
    support: int


class Figures(_Record):
    """Figures of one selection rule over every fold (`train.metrics.summarize`)."""

    accuracy: float
    accuracy_mean: float
    accuracy_std: float
    fold_accuracy: list[float]
    macro_f1: float
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]
    fold_confusion_matrices: list[list[list[int]]]
    best_epochs: list[int] | None = None  # the optimistic rule's choice
    selection: str


class Curves(_Record):
    test_accuracy: list[list[float]]
    train_loss: list[list[float | None]]


class Result(_Record):
    """One initialisation fine-tuned on every fold."""

    description: str
    honest: Figures
    optimistic: Figures
    curves: Curves
    wall_s: float
    leaked: bool = False


class PublishedFigure(_Record):
    initialisation: str
    accuracy: float
    approximate: bool
    source: str
    this_run_optimistic: float | None


class PublishedSetting(_Open):
    input_size: int
    pretraining_corpus: str
    pretraining: str


class Comparison(_Record):
    published: list[PublishedFigure]
    published_setting: PublishedSetting
    differences: list[str]
    note: str


class CacheFile(_Record):
    """A frame cache file a run mapped its frames from (`us4/train/frame_cache.py`): its name in
    the cache folder (the folder is the machine's, not recorded), size, and whether the run found
    it complete (`reused`) or wrote it, in `seconds`."""

    file: str
    bytes: int
    frames: int
    size: int
    reused: bool
    seconds: float


class FrameCaches(_Record):
    pretrain: CacheFile
    eval: CacheFile  # the pretrain file where a release is pretrained and evaluated on


class BenchmarkRecord(_Record):
    """benchmark.json."""

    format: Literal["us4-benchmark/1"]
    code: Code
    config: Config
    device: Device
    environment: dict[str, str | int | None]
    seeds: Seeds
    releases: Releases
    pretraining: Pretraining
    evaluation: Evaluation
    results: dict[str, Result]
    comparison: Comparison | None = None
    frame_cache: FrameCaches | None = None  # absent from records of us4 0.2.0 and before
    time_to_first_step_s: float | None = None  # from the command's start to the first pretraining step
    wall_s: WallTimes

    def dump(self) -> str:
        """The file's text: the fields in this order, absent optional parts left out as an old record lacks them."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2) + "\n"


def read_benchmark(data: bytes | str, where: str = "benchmark.json") -> BenchmarkRecord:
    """A benchmark record from its file's bytes; ReleaseError names the file and the fields at fault."""
    if len(data) > MAX_BENCHMARK_BYTES:
        raise ReleaseError(f"{where}: {len(data):,} bytes; a benchmark record holds at most {MAX_BENCHMARK_BYTES:,}")
    try:
        raw: Any = json.loads(data)
    except RecursionError:
        raise ReleaseError(f"{where}: nested too deep; not a record written by us4 benchmark") from None
    except ValueError as exc:
        raise ReleaseError(f"{where}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != BENCHMARK_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ReleaseError(f"{where}: not a record written by us4 benchmark (format {found!r}, "
                           f"expected {BENCHMARK_FORMAT!r})")
    try:
        return BenchmarkRecord.model_validate(raw)
    except ValidationError as exc:
        raise ReleaseError(f"{where}: not a record written by us4 benchmark: {_explain(exc)}") from None
