"""`us4 benchmark`: pretrain on a release (USCL and the no-SPG baseline), fine-tune every
initialisation on a POCUS release's folds, write benchmark.json, benchmark.md and plots."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from ..contract.benchmark import (BENCHMARK_FORMAT, MAX_BENCHMARK_BYTES, BenchmarkRecord, CacheFile, ClassCounts, Code,
                                  Comparison, Config, Device, Disjointness, Evaluation, FrameCaches, Pretraining,
                                  PublishedFigure, PublishedSetting, Releases, ReleaseUsed, Result, Seeds, Variant,
                                  Verified, WallTimes)
from ..contract.card import split_rule_text
from ..errors import TrainError
from ..files import atomic_write
from ..hashing import sha256_file, sha256_json
from ..contract.schema import TRAIN, VALIDATION
from ..release.read import Release, open_release
from ..release.verify import Verification, verify_release
from ..system import command_started
from ..version import __version__
from .checkpoint import load_backbone, save_weights
from .config import PUBLISHED, BenchmarkConfig, config_differences, get_config
from .data import VideoSet, load_release_videoset, release_videos
from .frame_cache import default_folder
from .distributed import World, gather_to_main, joined, rank_errors, remove_held_off, sigterm_held_off
from .finetune import FoldResult, evaluated_videos, finetune_folds
from .machinery import Speakers, code_sha256, deal, environment, jsonable, prepare_device, speakers, write_record
from .metrics import summarize
from .pretrain import label_mask, loss_name, pretrain
from .progress import StageProgress

Progress = Callable[[str], None]
#: initialisations by key in benchmark.json, with what each one is
INITS = {
    "uscl": "USCL pretraining on the pretrain release (sample pair generation + mixup, {loss})",
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


def release_info(rel: Release, verified: Verification) -> ReleaseUsed:
    """What a benchmark record says of a release it used: identity, split rule, and the
    verification it passed before the first training step."""
    return ReleaseUsed(name=rel.name, version=rel.version, phantom=rel.lock.phantom,
                       lock_sha256=rel.lock.sha256,  # the same name publish and verify use
                       split_rule=split_rule_text(rel.lock.recipe.splits),
                       verified=Verified(files=verified.checked, problems=len(verified.problems),
                                         notes=list(verified.notes)))


def verified_release(path: str | Path) -> tuple[Release, Verification]:
    """A release and its verification against its lock; TrainError naming the first problem."""
    rel = open_release(path)
    result = verify_release(rel)
    if result.problems:
        raise TrainError(f"{rel.root}: {len(result.problems)} file(s) differ from release.json, so it is not "
                         f"benchmarked; first: {result.problems[0]}")
    return rel, result


def pretrain_split(vs: VideoSet, holdout_fold: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(training videos, validation videos, how they were chosen) of a pretrain release."""
    splits = np.array(vs.splits)
    if (splits == TRAIN).any():
        return np.flatnonzero(splits == TRAIN), np.flatnonzero(splits == VALIDATION), \
            "release splits: train for training, validation for checkpoint selection"
    if (vs.folds >= 0).any():
        val = np.flatnonzero(vs.folds == holdout_fold)
        train = np.flatnonzero((vs.folds >= 0) & (vs.folds != holdout_fold))
        return train, val, f"release has folds, no train split: fold {holdout_fold} held out for checkpoint selection"
    raise TrainError("pretrain release has neither a 'train' split nor folds")


def release_classes(rel: Release) -> tuple[str, ...]:
    """The classes a release's recipe gives its sources (each source's, in recipe order; a class
    two sources share, once)."""
    names: list[str] = []
    for src in rel.lock.recipe.sources.values():
        names += [c for c in src.classes or [d.name for d in src.definition.classes] if c not in names]
    return tuple(names)


def pretrain_labels(vs: VideoSet, classes: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], str]:
    """(label per video, -1 unknown; the classifier's classes; where the labels come from) for the
    semi-supervised term: US-4's joint head where the release sets it, else the video's `label`
    among the pretrain release's own `classes`."""
    if (vs.us4_labels >= 0).any():
        from ..registry import US4_HEAD
        return vs.us4_labels.copy(), US4_HEAD, "us4_label (the joint head of US-4)"
    index = {name: k for k, name in enumerate(classes)}
    labels = np.array([index.get(name, -1) for name in vs.label_names], dtype=np.int64)
    if (labels >= 0).any():
        return labels, classes, "label (the pretrain release's classes)"
    return labels, (), "none"


def _overlap(pre: VideoSet, ev: VideoSet) -> np.ndarray:
    """Pretrain videos that are also in the evaluation release (same clip hash or video id)."""
    keys = {k for k in ev.clip_sha256 if k} | set(ev.video_ids)
    return np.array([(c in keys) if c else (v in keys) for c, v in zip(pre.clip_sha256, pre.video_ids)], dtype=bool)


def _result(folds: list[FoldResult], classes: tuple[str, ...], wall_s: float, description: str, *,
            leaked: bool) -> Result:
    optimistic = summarize([f.optimistic_confusion for f in folds], classes)
    honest = summarize([f.honest_confusion for f in folds], classes)
    optimistic["best_epochs"] = [f.best_epoch for f in folds]
    optimistic["selection"] = "per fold, the epoch of best test-fold accuracy (reference protocol; optimistic)"
    honest["selection"] = "final epoch of every fold; nothing chosen on the test fold"
    return Result.model_validate(jsonable({
        "description": description, "honest": honest, "optimistic": optimistic,
        "curves": {"test_accuracy": [f.test_accuracy for f in folds], "train_loss": [f.train_loss for f in folds]},
        "wall_s": wall_s, "leaked": leaked}))


def disjointness_record(pre_rel: Release, ev_rel: Release, first: int = 10) -> Disjointness:
    """Whether the pretraining release shares frames with the evaluation release (`us4 audit
    PRETRAIN --against EVAL`: identical or near-duplicate frames), for benchmark.json."""
    from ..media.neardup import MAX_DIFFERENCE, MAX_DISTANCE
    from ..release.audit import audit_against

    if pre_rel.root.resolve() == ev_rel.root.resolve() or pre_rel.lock.sha256 == ev_rel.lock.sha256:
        return Disjointness(status="same release",
                            statement=("pretraining on the evaluation release itself: its test-fold frames are seen "
                                       "unlabelled in pretraining (no cross-release audit)"))
    a = audit_against(pre_rel, ev_rel, keep=first)
    figures = (f"{a.compared:,} frame pairs compared by hash, {a.candidates:,} candidate pairs checked on pixels, "
               f"{a.found:,} found" + (f", {a.blank:,} with a blank frame not counted" if a.blank else ""))
    statement = (f"pretraining corpus disjoint from the evaluation: {figures}" if a.ok else
                 f"LEAKED: the pretraining release shares frames with the evaluation release ({figures}, "
                 f"{a.identical:,} identical; {a.shared_videos[0]} pretraining and {a.shared_videos[1]} evaluation "
                 "videos): the figures of pretrained initialisations are optimistic")
    side = ("video_id", "frame_index", "split")
    return Disjointness.model_validate({"status": "disjoint" if a.ok else "leaked", "statement": statement,
            "frames": {"pretrain": a.frames[0], "eval": a.frames[1]},
            "frame_pairs_compared": a.compared, "candidate_pairs_checked": a.candidates, "pairs_found": a.found,
            "identical_pairs": a.identical, "blank_pairs_not_counted": a.blank,
            "videos_sharing_frames": {"pretrain": a.shared_videos[0], "eval": a.shared_videos[1]},
            "measure": {"max_distance_bits": MAX_DISTANCE, "max_mean_difference": MAX_DIFFERENCE},
            "first_pairs": [{"distance": p.distance, "difference": p.difference, "pretrain": dict(zip(side, p.a)),
                             "eval": dict(zip(side, p.b))} for p in a.pairs]})


def cached_disjointness(pre_rel: Release, ev_rel: Release, folder: Path) -> Disjointness:
    """`disjointness_record`: the audit depends on the two locks and the measure alone, so a later
    run of the same pair reads the record from the frame cache folder (marked `reused`, in the
    record and on the console) instead of comparing every frame pair again."""
    from ..media.neardup import MAX_DIFFERENCE, MAX_DISTANCE

    key = sha256_json([__version__, pre_rel.lock.sha256, ev_rel.lock.sha256, MAX_DISTANCE, MAX_DIFFERENCE])
    path = folder / f"audit-{key[:16]}.json"
    with contextlib.suppress(OSError, ValidationError):  # none there, too large, or not ours: audited again
        if path.stat().st_size <= MAX_BENCHMARK_BYTES:
            return Disjointness.model_validate_json(path.read_bytes()).model_copy(update={"reused": True})
    record = disjointness_record(pre_rel, ev_rel)
    with contextlib.suppress(OSError):  # a folder we cannot write costs only the next run's audit
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, record.model_dump_json(exclude_unset=True).encode())
    return record


def fold_class_counts(vs: VideoSet, labels: np.ndarray, videos: np.ndarray, cfg: BenchmarkConfig) -> ClassCounts:
    """Videos and frames of each class in each evaluation fold, and a warning per fold lacking a class."""
    classes, n_folds = cfg.finetune.classes, cfg.finetune.folds
    counts: dict[str, dict[str, list[int]]] = {"videos": {}, "frames": {}}
    for k, name in enumerate(classes):
        of_class = videos[labels[videos] == k]
        counts["videos"][name] = [int((vs.folds[of_class] == f).sum()) for f in range(n_folds)]
        counts["frames"][name] = [vs.frame_counts(of_class[vs.folds[of_class] == f]) for f in range(n_folds)]
    warnings = [f"evaluation fold {f} holds no {name} video: its accuracy says nothing of {name}, and the "
                f"summed figures weigh that class by the other folds only"
                for name in classes for f in range(n_folds) if counts["videos"][name][f] == 0]
    return ClassCounts(**counts, warnings=warnings)


def check_out(out: Path) -> None:
    """`--out` may be new, empty, or an earlier benchmark's folder (which the run replaces whole)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "benchmark.json").is_file())):
        raise TrainError(f"--out {out}: exists and holds something other than an earlier benchmark "
                         "(no benchmark.json); choose a new folder")


def _commit(staging: Path, out: Path) -> None:
    """Put the finished staging folder at `out` by renaming it; an earlier output is moved aside first."""
    old = staging.with_name(staging.name.replace(".staging-", ".replaced-"))
    if out.exists():
        os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def run_benchmark(pretrain_path: str | Path, eval_path: str | Path, config: str | BenchmarkConfig, out: str | Path,
                  *, device: str | None = None, seed: int | None = None, label_fraction: float | None = None,
                  imagenet: str | Path | None = None, progress: Progress | None = None,
                  frame_cache: str | Path | None = None) -> BenchmarkRecord | None:
    """Run the whole benchmark and write its files into `out`; returns the benchmark.json record.

    The files appear at `out` at once: rank 0 writes them into a hidden staging folder beside
    `out` and renames it into place last (replacing an earlier benchmark's folder there). A run
    that fails, on any rank, removes the staging folder and leaves `out` as it was.

    Under torchrun (WORLD_SIZE > 1 in the environment) every rank calls this with the same
    arguments: pretraining is data-parallel, the (initialisation, fold) fine-tuning tasks are
    dealt round-robin to the ranks and their results gathered on rank 0, which alone writes
    files and returns the record (the other ranks return None). `progress` gets rank 0's
    pretraining lines and every rank's fine-tuning lines (prefixed with the rank).
    """
    t_all = time.perf_counter()
    cfg = config if isinstance(config, BenchmarkConfig) else get_config(config, seed=seed, label_fraction=label_fraction)
    out = Path(out)
    check_out(out)  # every rank sees the same answer, before any of them joins the others
    imagenet_backbone = load_backbone(imagenet) if imagenet else None  # fail early on a bad file
    # every rank checks the files it reads (on several nodes, each its own copy); one folder once
    pre_rel, pre_ok = verified_release(pretrain_path)
    same = Path(pretrain_path).resolve() == Path(eval_path).resolve()
    ev_rel, ev_ok = (pre_rel, pre_ok) if same else verified_release(eval_path)
    with joined(resolve_device(device)) as (world, dev), rank_errors(world):
        staging = out.parent / f".{out.name}.staging-{os.getpid()}"
        try:
            if world.main:
                staging.mkdir(parents=True)
            record = _run(pre_rel, ev_rel, cfg, staging, imagenet_backbone, dev, world, progress, t_all,
                          (pre_ok, ev_ok), Path(frame_cache) if frame_cache is not None else default_folder())
            if world.main:
                with sigterm_held_off():
                    _commit(staging, out)
            return record
        finally:
            remove_held_off(staging)


def _run(pre_rel: Release, ev_rel: Release, cfg: BenchmarkConfig, out: Path, imagenet_backbone: dict | None,
         dev: torch.device, world: World, progress: Progress | None, t_all: float,
         verified: tuple[Verification, Verification], frame_cache: Path) -> BenchmarkRecord | None:
    """The benchmark on this rank; rank 0 writes into `out` (the staging folder)."""
    prepare_device(dev, world)
    say = speakers(progress, world)
    wall: dict[str, float] = {}
    t = time.perf_counter()
    # only rank 0 writes the record
    disjointness = cached_disjointness(pre_rel, ev_rel, frame_cache) if world.main else None
    wall["audit"] = time.perf_counter() - t
    if disjointness is not None:
        earlier = "an earlier run's audit of this pair, " if disjointness.reused else ""
        say.main(f"{disjointness.statement} ({earlier}{wall['audit']:.1f}s)")

    # only the videos a run uses are decoded: the evaluated ones, and the pretraining split's
    t = time.perf_counter()
    same = pre_rel.root.resolve() == ev_rel.root.resolve()
    ev_index = release_videos(ev_rel)
    pre_index = ev_index if same else release_videos(pre_rel)
    train_v, val_v, _ = pretrain_split(pre_index, cfg.pretrain.holdout_fold)
    pre_used, ev_used = np.union1d(train_v, val_v), evaluated_videos(ev_index, cfg)[1]
    ev_vs = load_release_videoset(ev_rel, cfg.input_size, index=ev_index,
                                  videos=np.union1d(ev_used, pre_used) if same else ev_used,
                                  cache=frame_cache, say=say.rank)
    pre_vs = ev_vs if same else load_release_videoset(pre_rel, cfg.input_size, index=pre_index, videos=pre_used,
                                                      cache=frame_cache, say=say.rank)
    ev_vs.images = ev_vs.images.to(dev)
    pre_vs.images = pre_vs.images.to(dev)
    wall["decode"] = time.perf_counter() - t
    for vs in (pre_vs,) if same else (pre_vs, ev_vs):
        say.rank(vs.cache.describe())
    say.main(f"{len(pre_vs.images)} pretrain and {len(ev_vs.images)} evaluation frames at {cfg.input_size}px "
             f"ready in {wall['decode']:.1f}s" + (f"; {world.size} ranks ({world.backend})" if world.size > 1 else ""))

    # a release that cannot be evaluated fails now, not after pretraining
    class_counts = fold_class_counts(ev_vs, *evaluated_videos(ev_vs, cfg), cfg)
    for warning in class_counts.warnings:
        say.main(f"warning: {warning}")

    seeds = _seeds(cfg.seed)
    pre = _pretrain_variants(pre_rel, pre_vs, ev_index, cfg, seeds, out, dev, world, say)
    wall.update(pre.wall)
    backbones = {**pre.backbones, "random": None}
    if imagenet_backbone is not None:
        backbones["imagenet"] = imagenet_backbone

    # --- evaluation: every initialisation over the same folds, with the same seed; the
    # (initialisation, fold) tasks dealt round-robin to the ranks
    n_folds = cfg.finetune.folds
    mine = deal(((key, k) for key in backbones for k in range(n_folds)), world)
    say.main(f"stage: fine-tune {len(backbones)} initialisations x {n_folds} folds, {cfg.finetune.epochs} epochs each"
             + (f", dealt to {world.size} ranks" if world.size > 1 else ""))
    t = time.perf_counter()
    stage = StageProgress(say.rank, cfg.finetune.epochs * len(mine))
    done = {key: finetune_folds(ev_vs, backbone, cfg, device=dev, seed=seeds.finetune, progress=stage, name=key,
                                folds=[k for kk, k in mine if kk == key])
            for key, backbone in backbones.items()}
    gathered = gather_to_main(done, world)
    wall["finetune"] = time.perf_counter() - t
    if not world.main:
        return None
    results = {}
    for key in backbones:
        folds = sorted((f for part in gathered for f in part[key]), key=lambda f: f.fold)
        wall[f"finetune_{key}"] = sum(f.wall_s for f in folds)
        # a figure of an initialisation pretrained on frames the audit found in the evaluation release
        results[key] = _result(folds, cfg.finetune.classes, wall[f"finetune_{key}"],
                               INITS[key].format(loss=pre.loss), leaked=key in pre.variants
                               and disjointness.status == "leaked")
        say.all(f"{key}: honest acc {results[key].honest.accuracy:.3f}, "
                f"optimistic acc {results[key].optimistic.accuracy:.3f}")
    fold_layout = folds  # fold membership is the same for every initialisation
    wall["total"] = time.perf_counter() - t_all

    releases = Releases(pretrain=release_info(pre_rel, verified[0]), eval=release_info(ev_rel, verified[1]))
    pretraining = Pretraining.model_validate(jsonable({**pre.record, "variants": pre.variants, "audit": disjointness}))
    evaluation = Evaluation.model_validate(jsonable({
        "classes": list(cfg.finetune.classes),
        "protocol": (f"per fold: train layer4's last BasicBlock + a new Linear(512, {len(cfg.finetune.classes)}) "
                     "on the other folds (per epoch all training frames, or config finetune.steps_per_epoch "
                     "batches of them), test on the held-out fold after every epoch; frozen trunk in eval mode "
                     "with batch-norm statistics re-estimated on the fold's training frames (config "
                     "finetune.bn_frames of them, shuffled; null: all)"),
        "folds": [{"fold": f.fold, "test_videos": len(f.test_videos), "test_frames": f.n_test_frames,
                   "train_videos": len(f.train_videos), "train_frames": f.n_train_frames} for f in fold_layout],
        "class_counts": class_counts,
        "std": "population standard deviation over folds",
    }))
    record = BenchmarkRecord(
        format=BENCHMARK_FORMAT,
        code=Code(us4=__version__, train_code_sha256=code_sha256()),
        config=Config.model_validate(jsonable(asdict(cfg))),
        device=Device(type=dev.type, bf16_autocast=cfg.bf16_autocast and dev.type == "cuda",
                      channels_last=cfg.channels_last and dev.type == "cuda", cudnn_deterministic=dev.type == "cuda",
                      world_size=world.size, backend=world.backend,
                      sync_batchnorm=cfg.pretrain.sync_batchnorm and world.size > 1,
                      global_batch=cfg.pretrain.batch_size),
        environment=environment(dev),
        seeds=seeds,
        releases=releases,
        pretraining=pretraining,
        evaluation=evaluation,
        results=results,
        comparison=_comparison(cfg, results, releases, pretraining, fold_layout),
        frame_cache=FrameCaches(pretrain=_cache_file(pre_vs), eval=_cache_file(ev_vs)),
        time_to_first_step_s=None if pre.first_step_at is None else round(pre.first_step_at - command_started(), 3),
        wall_s=WallTimes(jsonable(wall)),
    )
    write_record(record, out)
    return record


def _cache_file(vs: VideoSet) -> CacheFile:
    c = vs.cache
    return CacheFile(file=c.path.name, bytes=c.bytes, frames=c.frames, size=c.size, reused=c.reused,
                     seconds=round(c.seconds, 3))


def _seeds(base: int) -> Seeds:
    """Every seed of a run, from one."""
    return Seeds(base=base, pretrain_model=base, pretrain_sampling=base + 1, pretrain_augment=base + 2,
                 pretrain_validation=base + 3, label_mask=base + 4, finetune=base + 10, finetune_augment=base + 11,
                 finetune_shuffle=base + 12, finetune_bn_frames=base + 13)


@dataclass
class _Pretrained:
    """USCL and its no-SPG baseline pretrained: their backbones, their records (rank 0's), the
    loss used, the pretraining part of the record, their wall times, and when the first step began."""

    backbones: dict[str, dict]
    variants: dict[str, Variant]
    loss: str
    record: dict
    wall: dict[str, float]
    first_step_at: float | None = None


def _pretrain_variants(pre_rel: Release, pre_vs: VideoSet, ev_index: VideoSet, cfg: BenchmarkConfig, seeds: Seeds,
                       out: Path, dev: torch.device, world: World, say: Speakers) -> _Pretrained:
    """USCL and the no-SPG baseline: one trainer, the same seed and labels; rank 0 saves each checkpoint.
    `ev_index`: every video of the evaluation release, for the overlap."""
    train_v, val_v, holdout = pretrain_split(pre_vs, cfg.pretrain.holdout_fold)
    if len(train_v) < 2:
        raise TrainError(f"pretrain release has {len(train_v)} training videos; at least 2 are needed")
    labels, classes, label_source = pretrain_labels(pre_vs, release_classes(pre_rel))
    n_classes = max(len(classes), 1)  # without labels the head is never trained
    labels[~label_mask(labels, cfg.pretrain.label_fraction, seeds.label_mask)] = -1
    overlap = _overlap(pre_vs, ev_index)
    labels[overlap] = -1  # their labels would reach the test folds through the supervised term
    loss = loss_name(cfg, int((labels[train_v] >= 0).sum()))
    pc = cfg.pretrain
    steps = -(-len(train_v) // pc.batch_size)
    if pc.steps_per_epoch is not None:
        steps = min(steps, pc.steps_per_epoch)
    done = _Pretrained({}, {}, loss, {
        "videos": {"train": len(train_v), "validation": len(val_v)},
        "frames": {"train": pre_vs.frame_counts(train_v), "validation": pre_vs.frame_counts(val_v)},
        "holdout": holdout,
        "label_source": label_source,
        "classifier_classes": list(classes),
        "loss": loss,
        "label_fraction": cfg.pretrain.label_fraction,
        "labelled_videos": int((labels[train_v] >= 0).sum()),
        "videos_in_eval_release": int(overlap[np.concatenate([train_v, val_v])].sum()),
        "note": ("videos also in the evaluation release are pretrained on without their labels; their frames "
                 "are still seen unlabelled, so test-fold images reach self-supervised pretraining")
        if overlap.any() else "no pretrain video is in the evaluation release",
    }, {})
    for key, spg in (("uscl", True), ("simclr_no_spg", False)):
        say.main(f"stage: pretrain {key}, {pc.epochs} epochs of up to {steps} steps of {pc.batch_size} videos "
                 f"({len(train_v)} training videos)")
        r = pretrain(pre_vs, train_v, val_v, labels, n_classes, cfg, spg=spg, device=dev, seed=seeds.pretrain_model,
                     progress=StageProgress(say.main, pc.epochs), name=key, world=world)
        if world.main:
            path = out / f"{key}.safetensors"
            save_weights(r.model.state_dict(), path, metadata={
                "format": "us4-uscl-model/1", "layout": "USCL ResNetSimCLR (features.*, l1, l2, fc)",
                "variant": key, "pretrain_release": f"{pre_rel.name}@{pre_rel.version}", "config": cfg.name,
                "best_epoch": str(r.best_epoch)})
            done.variants[key] = Variant.model_validate(jsonable({
                "spg": r.spg, "best_epoch": r.best_epoch, "best_val_loss": r.best_val_loss, "selection": r.selection,
                "wall_s": r.wall_s, "images_per_s": r.images_per_s, "checkpoint": path.name,
                "checkpoint_sha256": sha256_file(path), "history": r.history}))
        done.wall[f"pretrain_{key}"] = r.wall_s
        done.first_step_at = done.first_step_at or r.first_step_at
        done.backbones[key] = {k: v.detach().cpu() for k, v in r.model.features.state_dict().items()}
    return done


def _comparison(cfg: BenchmarkConfig, results: dict[str, Result], releases: Releases, pretraining: Pretraining,
                folds: list[FoldResult]) -> Comparison:
    """This run's figures beside the published ones, and every way its setting differs from the paper's."""
    setting = PublishedSetting.model_validate(PUBLISHED["setting"])
    published = [PublishedFigure.model_validate({
        **f, "this_run_optimistic": results[f["initialisation"]].optimistic.accuracy
        if f["initialisation"] in results else None}) for f in PUBLISHED["figures"]]
    pre, ev = releases.pretrain, releases.eval
    n_videos = pretraining.videos.train + pretraining.videos.validation
    n_frames = pretraining.frames.train + pretraining.frames.validation
    differences = config_differences(cfg) + [
        (f"pretraining corpus: {pre.name} {pre.version}, {n_videos} videos, {n_frames} frames, "
         f"{pretraining.videos_in_eval_release} of them also in the evaluation release "
         f"(paper: {setting.pretraining_corpus})"),
        (f"evaluation: {ev.name} {ev.version}, {sum(f.n_test_frames for f in folds)} frames of "
         f"{sum(len(f.test_videos) for f in folds)} videos, {len(folds)} video-level folds "
         f"(paper: {setting.evaluation})"),
    ]
    return Comparison(published=published, published_setting=setting, differences=differences,
                      note=("the optimistic figures follow the paper's protocol and are the ones to set beside the "
                            "published figures; the honest ones have no published counterpart"))
