"""`us4 benchmark`: pretrain on a release (USCL and the no-SPG baseline), fine-tune every
initialisation on a POCUS release's folds, write benchmark.json, benchmark.md and plots."""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import TrainError
from ..hashing import sha256_file
from ..release.read import Release, open_release

from ..system import available_cores
from ..contract.benchmark_card import benchmark_markdown
from .checkpoint import load_backbone, save_weights
from .config import BenchmarkConfig, get_config
from .data import FRAME_COLUMNS, VideoSet, load_videoset
from .finetune import FoldResult, finetune_folds
from .metrics import summarize
from .pretrain import PretrainResult, label_mask, pretrain

FORMAT = "us4-benchmark/1"
Progress = Callable[[str], None]
#: initialisations by key in benchmark.json, with what each one is
INITS = {
    "uscl": "USCL pretraining on the pretrain release (sample pair generation + mixup, NT-Xent + semi-supervised CE)",
    "simclr_no_spg": "the same trainer without sample pair generation (SimCLR-style: two augmentations of one frame)",
    "random": "random initialisation (no pretraining)",
    "imagenet": "ImageNet weights supplied by the user (torchvision layout)",
}


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise TrainError(f"--device must be cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available to this PyTorch")
    return torch.device(name)


def release_info(rel: Release) -> dict:
    return {"name": rel.name, "version": rel.version,
            "lock_sha256": rel.lock.sha256}  # the same name publish and verify use


def load_release_videoset(rel: Release, size: int) -> VideoSet:
    return load_videoset(rel.frames(FRAME_COLUMNS), rel.videos(), size)


def pretrain_split(vs: VideoSet, holdout_fold: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(training videos, validation videos, how they were chosen) of a pretrain release."""
    splits = np.array(vs.splits)
    if (splits == "train").any():
        return np.flatnonzero(splits == "train"), np.flatnonzero(splits == "validation"), \
            "release splits: train for training, validation for checkpoint selection"
    if (vs.folds >= 0).any():
        val = np.flatnonzero(vs.folds == holdout_fold)
        train = np.flatnonzero((vs.folds >= 0) & (vs.folds != holdout_fold))
        return train, val, f"release has folds, no train split: fold {holdout_fold} held out for checkpoint selection"
    raise TrainError("pretrain release has neither a 'train' split nor folds")


def pretrain_labels(vs: VideoSet) -> tuple[np.ndarray, int, str]:
    """(label per video, -1 unknown; classifier size; which column) for the semi-supervised term."""
    if (vs.us4_labels >= 0).any():
        from ..registry import US4_HEAD
        return vs.us4_labels.copy(), len(US4_HEAD), "us4_label"
    if (vs.label_ids >= 0).any():
        return vs.label_ids.copy(), int(vs.label_ids.max()) + 1, "label_id"
    return np.full(len(vs), -1, dtype=np.int64), 1, "none"


def _overlap(pre: VideoSet, ev: VideoSet) -> np.ndarray:
    """Pretrain videos that are also in the evaluation release (same clip hash or video id)."""
    keys = {k for k in ev.clip_sha256 if k} | set(ev.video_ids)
    return np.array([(c in keys) if c else (v in keys) for c, v in zip(pre.clip_sha256, pre.video_ids)], dtype=bool)


def _code_sha256() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _environment(device: torch.device) -> dict:
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


def _pretrain_record(r: PretrainResult, checkpoint: str, sha: str) -> dict:
    return {"spg": r.spg, "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss, "selection": r.selection,
            "wall_s": r.wall_s, "images_per_s": r.images_per_s, "checkpoint": checkpoint,
            "checkpoint_sha256": sha, "history": r.history}


def _init_record(folds: list[FoldResult], classes: tuple[str, ...], wall_s: float, description: str) -> dict:
    optimistic = summarize([f.optimistic_confusion for f in folds], classes)
    honest = summarize([f.honest_confusion for f in folds], classes)
    optimistic["best_epochs"] = [f.best_epoch for f in folds]
    optimistic["selection"] = "per fold, the epoch of best test-fold accuracy (reference protocol; optimistic)"
    honest["selection"] = "final epoch of every fold; nothing chosen on the test fold"
    return {"description": description, "honest": honest, "optimistic": optimistic,
            "curves": {"test_accuracy": [f.test_accuracy for f in folds], "train_loss": [f.train_loss for f in folds]},
            "wall_s": wall_s}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def run_benchmark(pretrain_path: str | Path, eval_path: str | Path, config: str | BenchmarkConfig, out: str | Path,
                  *, device: str | None = None, seed: int | None = None, label_fraction: float | None = None,
                  imagenet: str | Path | None = None, progress: Progress | None = None) -> dict:
    """Run the whole benchmark and write its files into `out`; returns the benchmark.json record."""
    t_all = time.perf_counter()
    cfg = config if isinstance(config, BenchmarkConfig) else get_config(config, seed=seed, label_fraction=label_fraction)
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(available_cores())
    else:  # seeds must make a run repeatable on the same device: no autotuned, nondeterministic kernels
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    imagenet_backbone = load_backbone(imagenet) if imagenet else None  # fail early on a bad file

    pre_rel, ev_rel = open_release(pretrain_path), open_release(eval_path)
    same = pre_rel.root.resolve() == ev_rel.root.resolve()
    wall: dict[str, float] = {}
    t = time.perf_counter()
    ev_vs = load_release_videoset(ev_rel, cfg.input_size)
    pre_vs = ev_vs if same else load_release_videoset(pre_rel, cfg.input_size)
    ev_vs.images = ev_vs.images.to(dev)
    pre_vs.images = pre_vs.images.to(dev)
    wall["decode"] = time.perf_counter() - t
    say(f"decoded {len(pre_vs.images)} pretrain and {len(ev_vs.images)} evaluation frames at "
        f"{cfg.input_size}px in {wall['decode']:.1f}s")

    # --- pretraining: USCL and the no-SPG baseline, one trainer, same seed and labels
    train_v, val_v, holdout = pretrain_split(pre_vs, cfg.pretrain.holdout_fold)
    if len(train_v) < 2:
        raise TrainError(f"pretrain release has {len(train_v)} training videos; at least 2 are needed")
    labels, n_classes, label_source = pretrain_labels(pre_vs)
    seeds = {"base": cfg.seed, "pretrain_model": cfg.seed, "pretrain_sampling": cfg.seed + 1,
             "pretrain_augment": cfg.seed + 2, "pretrain_validation": cfg.seed + 3, "label_mask": cfg.seed + 4,
             "finetune": cfg.seed + 10, "finetune_augment": cfg.seed + 11, "finetune_shuffle": cfg.seed + 12,
             "finetune_bn_frames": cfg.seed + 13}
    labels[~label_mask(labels, cfg.pretrain.label_fraction, seeds["label_mask"])] = -1
    overlap = _overlap(pre_vs, ev_vs)
    labels[overlap] = -1  # their labels would reach the test folds through the supervised term
    variants: dict[str, dict] = {}
    backbones: dict[str, dict | None] = {}
    for key, spg in (("uscl", True), ("simclr_no_spg", False)):
        r = pretrain(pre_vs, train_v, val_v, labels, n_classes, cfg, spg=spg, device=dev, seed=cfg.seed,
                     progress=say, name=key)
        path = out / f"{key}.safetensors"
        save_weights(r.model.state_dict(), path, metadata={
            "format": "us4-uscl-model/1", "layout": "USCL ResNetSimCLR (features.*, l1, l2, fc)",
            "variant": key, "pretrain_release": f"{pre_rel.name}@{pre_rel.version}", "config": cfg.name,
            "best_epoch": str(r.best_epoch)})
        variants[key] = _pretrain_record(r, path.name, sha256_file(path))
        wall[f"pretrain_{key}"] = r.wall_s
        backbones[key] = {k: v.detach().cpu() for k, v in r.model.features.state_dict().items()}
    backbones["random"] = None
    if imagenet_backbone is not None:
        backbones["imagenet"] = imagenet_backbone

    # --- evaluation: every initialisation over the same folds, with the same seed
    results = {}
    for key, backbone in backbones.items():
        t = time.perf_counter()
        folds = finetune_folds(ev_vs, backbone, cfg, device=dev, seed=seeds["finetune"], progress=say, name=key)
        wall[f"finetune_{key}"] = time.perf_counter() - t
        results[key] = _init_record(folds, cfg.finetune.classes, wall[f"finetune_{key}"], INITS[key])
        say(f"{key}: honest acc {results[key]['honest']['accuracy']:.3f}, "
            f"optimistic acc {results[key]['optimistic']['accuracy']:.3f}")
    fold_layout = folds  # fold membership is the same for every initialisation
    wall["total"] = time.perf_counter() - t_all

    record = {
        "format": FORMAT,
        "code": {"us4": __version__, "train_code_sha256": _code_sha256()},
        "config": asdict(cfg),
        "device": {"type": dev.type, "bf16_autocast": cfg.bf16_autocast and dev.type == "cuda",
                   "channels_last": cfg.channels_last and dev.type == "cuda",
                   "cudnn_deterministic": dev.type == "cuda"},
        "environment": _environment(dev),
        "seeds": seeds,
        "releases": {"pretrain": release_info(pre_rel), "eval": release_info(ev_rel)},
        "pretraining": {
            "videos": {"train": len(train_v), "validation": len(val_v)},
            "frames": {"train": pre_vs.frame_counts(train_v), "validation": pre_vs.frame_counts(val_v)},
            "holdout": holdout,
            "label_source": label_source,
            "classifier_classes": n_classes,
            "label_fraction": cfg.pretrain.label_fraction,
            "labelled_videos": int((labels[train_v] >= 0).sum()),
            "videos_in_eval_release": int(overlap[np.concatenate([train_v, val_v])].sum()),
            "note": ("videos also in the evaluation release are pretrained on without their labels; their frames "
                     "are still seen unlabelled, so test-fold images reach self-supervised pretraining")
            if overlap.any() else "no pretrain video is in the evaluation release",
            "variants": variants,
        },
        "evaluation": {
            "classes": list(cfg.finetune.classes),
            "protocol": (f"per fold: train layer4's last BasicBlock + a new Linear(512, {len(cfg.finetune.classes)}) "
                         "on the other folds, test "
                         "on the held-out fold after every epoch; frozen trunk in eval mode with batch-norm "
                         "statistics re-estimated on the fold's training frames (config finetune.bn_frames of "
                         "them, shuffled; null: all)"),
            "folds": [{"fold": f.fold, "test_videos": len(f.test_videos), "test_frames": f.n_test_frames,
                       "train_videos": len(f.train_videos), "train_frames": f.n_train_frames} for f in fold_layout],
            "std": "population standard deviation over folds",
        },
        "results": results,
        "wall_s": wall,
    }
    record = _jsonable(record)
    (out / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "benchmark.md").write_text(benchmark_markdown(record))
    from .plots import write_plots
    write_plots(record, out)
    return record
