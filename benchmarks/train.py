"""Pretraining throughput of the batched loader against a reference-style one, measured in one run.

    python benchmarks/train.py [--release DIR] [--device cpu|cuda] [--size 64] [--batch 32] [--steps 20]

Both pipelines feed the same model and the same USCL training step (NT-Xent + the
semi-supervised term, Adam) with sample pair generation and mixup:

- batched (us4.train): frames decoded once into a uint8 tensor; per step, index it and
  augment the batch in torch on the device (one grid_sample for crop + flip);
- cached (us4.train, what `us4 benchmark` runs; with --release): the same, the tensor mapped
  from the release's frame cache file (`us4/train/frame_cache.py`, written before it is measured);
- reference-style (as the USCL code): a DataLoader with one worker per core; per item,
  decode three PNG frames with PIL, convert to RGB, resize, random resized crop, flip,
  brightness/contrast jitter with PIL, to tensor, normalise, mix.

It prints images per second through the model (two views per video) and the peak
memory of each pipeline (resident memory of its whole process tree, sampled; on CUDA
also the peak allocated GPU memory), and their ratio. Each pipeline runs in its own
process, one after the other, so neither sees the other's memory. Without --release it
uses a synthetic release of 60 videos x 20 frames of 384 x 384 px (POCUS-like sizes).

    python benchmarks/train.py --release DIR --pipelines batched,cached   # the cache against memory
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tables(release: str | None):
    if release:
        from us4.release.read import open_release
        from us4.train.data import FRAME_COLUMNS
        rel = open_release(release)
        return rel.frames(FRAME_COLUMNS), rel.videos()
    from us4.train.synthetic import synthetic_tables
    return synthetic_tables(n_videos=60, frames_per_video=20, size=384, seed=0)


class ReferenceStyleDataset:
    """Per-item PIL work in loader workers, as the USCL reference's USDataset_video does."""

    def __init__(self, blobs: list[bytes], members: list[list[int]], size: int):
        from us4.train.config import AugmentConfig, PretrainConfig
        self.blobs, self.members, self.size, self.cfg = blobs, members, size, AugmentConfig()
        self.mix_alpha = PretrainConfig().mix_alpha  # the same Beta(alpha, alpha) as the trainer

    def __len__(self) -> int:
        return len(self.members)

    def _augment(self, img, rng: np.random.Generator):
        import math

        from PIL import Image, ImageEnhance, ImageOps
        cfg, s = self.cfg, self.size
        img = img.resize((s, s), Image.BILINEAR)
        area = rng.uniform(*cfg.crop_scale)
        r = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
        w, h = min(s, round(s * math.sqrt(area * r))), min(s, round(s * math.sqrt(area / r)))
        x0, y0 = rng.integers(0, s - w + 1), rng.integers(0, s - h + 1)
        img = img.resize((s, s), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
        if rng.random() < cfg.flip_p:
            img = ImageOps.mirror(img)
        if rng.random() < cfg.jitter_p:
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness))
            img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast))
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - cfg.mean) / cfg.std

    def __getitem__(self, index: int):
        import torch
        from PIL import Image
        rng = np.random.default_rng()
        frames = self.members[index]
        picks = rng.choice(frames, size=3, replace=len(frames) < 3)
        a, b, c = (self._augment(Image.open(io.BytesIO(self.blobs[i])).convert("RGB"), rng) for i in picks)
        lam = rng.beta(self.mix_alpha, self.mix_alpha)
        return torch.from_numpy(lam * a + (1 - lam) * b), torch.from_numpy(lam * c + (1 - lam) * b)


def child(args: argparse.Namespace) -> None:
    """Run one pipeline; print a JSON line with its images per second."""
    import torch

    from us4.train.augment import augment
    from us4.train.config import get_config
    from us4.system import available_cores
    from us4.train.data import load_videoset
    from us4.train.pretrain import train_step
    from us4.registry import US4_HEAD
    from us4.train.resnet import USCLModel
    from us4.train.runtime import adam
    from us4.train.spg import epoch_batches, make_views, sample_rows

    device = torch.device(args.device)
    torch.set_num_threads(available_cores())
    cfg = get_config("paper" if device.type == "cuda" else "smoke")
    torch.manual_seed(0)
    model = USCLModel(len(US4_HEAD)).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.use_channels_last()
    opt = adam(model.parameters(), cfg.pretrain.lr, cfg.pretrain.weight_decay)
    labels = torch.full((args.batch,), -1, device=device)
    extra = {}

    if args.pipeline in ("batched", "cached"):
        t = time.perf_counter()
        if args.release:  # the trainer's reading: a row group at a time, into memory or the mapped cache
            from us4.release.read import open_release
            from us4.train.data import load_release_videoset
            vs = load_release_videoset(open_release(args.release), args.size,
                                       cache=Path(args.frame_cache) if args.pipeline == "cached" else None)
        else:
            vs = load_videoset(*_tables(None), args.size)
        vs.images = vs.images.to(device)
        extra["decode_once_s"] = time.perf_counter() - t
        extra["frames"] = len(vs.images)
        rng, g = np.random.default_rng(0), torch.Generator(device=device).manual_seed(0)

        def batches():
            while True:
                for vids in epoch_batches(np.arange(len(vs)), args.batch, rng):
                    if len(vids) == args.batch:
                        yield make_views(vs.images, sample_rows(vs.members, vids, rng),
                                         lambda x: augment(x, cfg.augment, g))
    else:
        from torch.utils.data import DataLoader
        frames, videos = _tables(args.release)
        ids = {fid: i for i, fid in enumerate(frames.column("frame_id").to_pylist())}
        blobs = frames.column("image").combine_chunks().field("bytes").to_pylist()
        members = [[ids[f] for f in fids] for fids in videos.column("frame_ids").to_pylist() if fids]
        loader = DataLoader(ReferenceStyleDataset(blobs, members, args.size), batch_size=args.batch, shuffle=True,
                            num_workers=args.workers, drop_last=True, persistent_workers=True,
                            pin_memory=device.type == "cuda")

        def batches():
            while True:
                for v1, v2 in loader:
                    yield v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)

    it = batches()
    for _ in range(args.warmup):
        train_step(model, opt, *next(it), labels, cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, opt, *next(it), labels, cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        extra["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    wall = time.perf_counter() - t
    print(json.dumps({"images_per_s": 2 * args.batch * args.steps / wall, **extra}))


def measure(args: argparse.Namespace, pipeline: str) -> dict:
    cmd = [sys.executable, __file__, "--child", pipeline, "--device", args.device, "--size", str(args.size),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--workers", str(args.workers), "--frame-cache", args.frame_cache] + (
               ["--release", args.release] if args.release else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    peak, parent = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{pipeline} pipeline failed:\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mib"] = peak / 2**20
    return result


def main() -> None:
    import torch

    from us4.system import available_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", help="a us4 release folder (default: a synthetic POCUS-like set)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=None, help="input size (default: 64 on cpu, 224 on cuda)")
    ap.add_argument("--batch", type=int, default=32, help="videos per step (two views each)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default: 12 on cpu, 50 on cuda)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=available_cores(), help="reference-style loader workers")
    ap.add_argument("--pipelines", default="batched,cached,reference",
                    help="which to measure, in this order (cached only with --release)")
    ap.add_argument("--frame-cache", default=None, help="frame cache folder of `cached` (default: a temporary one)")
    ap.add_argument("--child", choices=["batched", "cached", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = args.size or (224 if args.device == "cuda" else 64)
    args.steps = args.steps or (50 if args.device == "cuda" else 12)
    if args.child:
        args.pipeline = args.child
        child(args)
        return
    print(f"device {args.device} ({available_cores()} cpus), input {args.size} px, {args.batch} videos "
          f"({2 * args.batch} images) per step, {args.steps} measured steps after {args.warmup} warm-up; "
          f"data: {args.release or 'synthetic 60 videos x 20 frames, 384 px'}")
    pipelines = [p for p in args.pipelines.split(",") if p != "cached" or args.release]
    with tempfile.TemporaryDirectory(prefix="us4-frames-") as tmp:
        args.frame_cache = args.frame_cache or tmp
        if "cached" in pipelines:  # written here, so that the measured run maps it
            from us4.release.read import open_release
            from us4.train.data import load_release_videoset
            print(load_release_videoset(open_release(args.release), args.size, cache=Path(args.frame_cache)
                                        ).cache.describe())
        runs = {p: measure(args, p) for p in pipelines}
    names = {"batched": "batched (us4.train, in memory)", "cached": "cached (us4.train, mapped file)",
             "reference": f"reference-style ({args.workers} PIL workers)"}
    for p, r in runs.items():
        gpu = f", GPU peak {r['gpu_peak_mib']:.0f} MiB" if "gpu_peak_mib" in r else ""
        once = f"  [frames ready: {r['frames']} in {r['decode_once_s']:.1f} s]" if "frames" in r else ""
        print(f"{names[p]:40s} {r['images_per_s']:8.1f} images/s, peak RSS {r['peak_rss_mib']:6.0f} MiB{gpu}{once}")
    for a, b in (("cached", "batched"), ("batched", "reference")):
        if a in runs and b in runs:
            print(f"ratio {a} / {b}: {runs[a]['images_per_s'] / runs[b]['images_per_s']:.2f}x images/s, "
                  f"{runs[a]['peak_rss_mib'] / runs[b]['peak_rss_mib']:.2f}x peak memory")


if __name__ == "__main__":
    main()
