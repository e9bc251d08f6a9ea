"""How much `us4 build` costs on top of decoding and PNG encoding, measured in one run.

    python benchmarks/ingest.py [POCUS_DATA_DIR] [--workers N]

On the POCUS sample with pipelines/pocus.yaml it prints:
- frames written per second and the build's peak memory (all its processes), for
  half of the clips and for all of them (memory should not grow with the clip count);
- the ratio of the build's wall time to a plain loop with the same number of
  processes that only decodes each clip up to its last kept frame and PNG-encodes the
  kept, cropped frames with the same settings (the list read from the release);
- the ratio to the POCOVID extraction rule as the dataset's authors run it (OpenCV:
  read every frame, keep every int(fps/3)-th up to 30, write JPEG files; one process),
  and to the same rule spread over the same number of processes.
Needs the `bench` extra (opencv-python-headless, psutil).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "pipelines" / "pocus.yaml"


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory of a command and all its children (sampled every 20 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return wall, peak


def build(raw: Path, out: Path, workers: int) -> tuple[float, int]:
    return run_measured([sys.executable, "-m", "us4.cli", "build", str(RECIPE), "--raw", f"pocus={raw}",
                         "--out", str(out), "--workers", str(workers), "--quiet"])


def plain_clip(job: tuple[str, list[int], list[int], bool, int]) -> int:
    """Decode to the last kept frame; crop and PNG-encode the kept ones. Nothing else."""
    import av
    import numpy as np
    from PIL import Image

    path, keep, box, colour, level = job
    wanted, last, n = set(keep), max(keep), 0
    x, y, w, h = box
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")[y:y + h, x:x + w]
                arr = rgb if colour else (rgb @ np.array([299, 587, 114]) // 1000).astype(np.uint8)
                Image.fromarray(arr).save(io.BytesIO(), format="PNG", compress_level=level)
                n += 1
            if i >= last:
                break
    return n


def pocovid_clip(job: tuple[str, str]) -> int:
    """The dataset authors' rule: OpenCV reads every frame, keeps every int(fps/3)-th, up to 30, as JPEG."""
    import cv2

    path, out_dir = job
    cap = cv2.VideoCapture(path)
    every = max(1, int(cap.get(cv2.CAP_PROP_FPS) / 3))
    n = i = 0
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0 and n < 30:
            cv2.imwrite(os.path.join(out_dir, f"{Path(path).stem}_frame{i}.jpg"), frame)
            n += 1
        i += 1
    cap.release()
    return n


def timed_pool(fn, jobs: list, workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            fn(job)
    else:
        with Pool(workers) as pool:
            pool.map(fn, jobs, chunksize=1)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", nargs="?", default=str(REPO.parent / "shared" / "pocus" / "data"))
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    raw = Path(args.raw)
    sys.path.insert(0, str(REPO))
    from us4.recipe import load_recipe
    from us4.release.read import open_release

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # half of the clips (symlinked), to see whether memory grows with the clip count
        half = tmp / "half"
        clips = sorted((raw / "pocus_videos" / "convex").iterdir())
        (half / "pocus_videos" / "convex").mkdir(parents=True)
        for clip in clips[: len(clips) // 2]:
            (half / "pocus_videos" / "convex" / clip.name).symlink_to(clip.resolve())
        shutil.copy(raw / "dataset_metadata.csv", half / "dataset_metadata.csv")
        half_wall, half_peak = build(half, tmp / "rel_half", args.workers)
        wall, peak = build(raw, tmp / "rel", args.workers)

        rel = open_release(tmp / "rel")
        level = load_recipe(RECIPE).png_compress_level
        videos = rel.videos(["video_id", "path", "frame_indices", "crop_box", "colour", "n_kept"]).to_pylist()
        frames = sum(v["n_kept"] for v in videos)
        clip_root = raw / "pocus_videos"
        plain_jobs = [(str(clip_root / v["path"]), list(v["frame_indices"]), list(v["crop_box"]), v["colour"], level)
                      for v in videos]
        plain = timed_pool(plain_clip, plain_jobs, args.workers)
        jpg = tmp / "jpg"
        jpg.mkdir()
        pocovid_jobs = [(str(clip_root / v["path"]), str(jpg)) for v in videos]
        pocovid_1 = timed_pool(pocovid_clip, pocovid_jobs, 1)
        pocovid_n = timed_pool(pocovid_clip, pocovid_jobs, args.workers)

    n_half = len(clips) // 2
    print(f"POCUS sample: {len(videos)} clips built, {frames} frames, {args.workers} worker processes")
    print(f"us4 build (all clips):        {wall:7.2f} s  {frames / wall:7.1f} frames/s  peak memory {peak / 2**20:7.1f} MiB")
    print(f"us4 build ({n_half} of {len(clips)} clips):   {half_wall:7.2f} s                     peak memory {half_peak / 2**20:7.1f} MiB")
    print(f"plain decode + crop + PNG:    {plain:7.2f} s")
    print(f"POCOVID rule, 1 process:      {pocovid_1:7.2f} s")
    print(f"POCOVID rule, {args.workers} processes:    {pocovid_n:7.2f} s")
    print(f"ratio build / plain loop:           {wall / plain:5.2f}  (target <= 1.25)")
    print(f"ratio build / POCOVID (as run):     {wall / pocovid_1:5.2f}  (target < 1)")
    print(f"ratio build / POCOVID ({args.workers} processes): {wall / pocovid_n:5.2f}")
    print(f"peak memory all / half clips:       {peak / half_peak:5.2f}  (target: ~1, under 1 GiB)")


if __name__ == "__main__":
    main()
