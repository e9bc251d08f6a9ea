"""How much `us4 build` costs on top of decoding and PNG encoding, measured in one run.

    python benchmarks/ingest.py [POCUS_DATA_DIR] [--blues BLUES_DIR] [--workers N]

On COVID-BLUES (every frame of its 362 clips, 31,746 frames: pipelines/blues.yaml with
`sampling: {every_n: 1}` and `crop: auto`, text off) it prints the build's wall time and peak
memory (target < 600 MiB) and its ratio to the lossless limit (target <= 1.15): a loop with
the same number of processes that decodes every frame with PyAV, takes its luma plane through
the build's range mapping, and encodes it with the build's PNG encoder at level 1 (the fastest
lossless one measured, benchmarks/png.py), and nothing else; the same ratio in CPU seconds
of all their processes; each step's CPU time per frame in one process; and a build's fixed
cost: the wall time of a build of five clips (one a fold), and of the imports a build needs.

On the POCUS sample with pipelines/pocus.yaml it prints:
- frames written per second and the build's peak memory (all its processes), for
  half of the clips and for all of them (memory should not grow with the clip count);
- the ratio of the build's wall time to a plain loop with the same number of
  processes that only decodes each clip up to its last kept frame and PNG-encodes the
  kept, cropped frames with the same settings (the list read from the release);
- the ratio to the POCOVID extraction rule as the dataset's authors run it (OpenCV:
  read every frame, keep every int(fps/3)-th up to 30, write JPEG files; one process;
  target <= 0.8),
  and to the same rule spread over the same number of processes.
- the cost of the typed lock and the path checks: reading and validating the lock, and
  joining every path it names through the checks, as a share of the build's wall time
  (target: under 2 %).

A DICOM case (skip it with --no-dicom) writes phantom multi-frame DICOM files (RLE, JPEG
baseline, JPEG 2000, 40 frames, scanner regions), at 224x192 (small frames: the build's
fixed costs, start-up and the files beside the shards, weigh most) and at 640x480 (the size
of the real sample's frames in ../shared/dicom), and prints for each:
- the build's frames/s and its ratio to a plain loop over the same files with the same
  number of processes: pydicom decodes the kept frames of each file, crops them to
  the scanner region and PNG-encodes them, grey or RGB as the build keeps them (target
  <= 1.25), both without a text check, at 24 and at 48 files; and from the step between
  the two, the ratio per frame and a build's fixed cost;
- the text check's cost inside the build: the same build with `text: mask`, its extra
  seconds and the frames it checked per second of them.
Needs the `bench` extra (opencv-python-headless, psutil) and, for the text check, `text`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

from measure import children_cpu, run_measured  # beside this script

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "pipelines" / "pocus.yaml"
#: small frames, where the build's fixed costs show; and the size of the real sample's frames (640x480)
DICOM_SIZES = ((224, 192), (640, 480))


def build(raw: Path, out: Path, workers: int) -> tuple[float, int]:
    return run_measured([sys.executable, "-m", "us4.cli", "build", str(RECIPE), "--raw", f"pocus={raw}",
                         "--out", str(out), "--workers", str(workers), "--quiet"], ok=(0, 3))


def plain_clip(job: tuple[str, list[int], list[int], bool, int]) -> int:
    """Decode to the last kept frame; crop and PNG-encode the kept ones. Nothing else.

    The least conversion that gives the build's pixels: planar YUV, the cropped luma
    plane through the full-range table (no swscale); GIF's packed RGB, its bytes
    reordered and the integer BT.601 grey of the crop; anything else (and colour
    clips) rgb24 from swscale. One decoder thread per process, as in the build.
    """
    import av
    import numpy as np
    from PIL import Image

    # the build's own format tables, conversions and PNG encoder, so that both make the same bytes
    from us4.media.decode import PACKED_RGB_FORMATS, YUV_FORMATS, limited_to_full
    from us4.media.pixels import encode_png, to_grey

    full_range = limited_to_full(np.arange(256, dtype=np.uint8)).tolist()
    path, keep, box, colour, level = job
    wanted, last, n = set(keep), max(keep), 0
    x, y, w, h = box
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                fmt = frame.format.name
                p = frame.planes[0]
                if not colour and fmt in YUV_FORMATS and not frame.rotation:
                    img = Image.frombuffer("L", (p.width, p.height), p, "raw", "L", p.line_size, 1)
                    img = img.crop((x, y, x + w, y + h))
                    if not (fmt.startswith("yuvj") or int(frame.color_range or 0) == 2):
                        img = img.point(full_range)
                else:  # (the POCUS sample has no rotated or colour clip)
                    if fmt in PACKED_RGB_FORMATS and not frame.rotation:
                        bpp, rgb_at = PACKED_RGB_FORMATS[fmt]
                        rgb = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[y:y + h, x * bpp:(x + w) * bpp]
                        rgb = rgb.reshape(h, w, bpp)[..., list(rgb_at)]
                    else:
                        rgb = np.rot90(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0) // 90 % 4)
                        rgb = rgb[y:y + h, x:x + w]
                    img = Image.fromarray(np.ascontiguousarray(rgb if colour else to_grey(rgb)))
                encode_png(np.asarray(img), level)
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


def plain_dicom(job: tuple[str, list[int], list[int], bool, int]) -> int:
    """pydicom decodes the kept frames (and only those, as the build does); each is cropped to
    the region and PNG-encoded, grey or, for a colour clip, RGB (the build's pixels)."""
    import numpy as np
    from pydicom.pixels import iter_pixels

    from us4.media.pixels import encode_png, to_grey  # the build's own grey and encoder: the same bytes

    path, keep, box, colour, level = job
    x, y, w, h = box
    for frame in iter_pixels(path, indices=keep):
        a = np.asarray(frame[y:y + h, x:x + w], dtype=np.uint8)
        encode_png(a if colour else to_grey(a), level)
    return len(keep)


def dicom_case(tmp: Path, workers: int, repeats: int, size: tuple[int, int]) -> None:
    import csv

    import yaml

    from us4.phantom import write_phantom_dicom
    from us4.release.read import open_release

    tmp = tmp / f"dicom-{size[0]}x{size[1]}"
    # 24 files, and 48 (the same 24, hard-linked, plus 24 more): the step between them is the
    # build's cost per frame, free of what a build costs whatever its size
    corpora = {n: tmp / f"dicom-{n}" for n in (24, 48)}
    syntaxes = (("rle", "MONOCHROME2"), ("jpeg-baseline", "YBR_FULL_422"), ("jpeg2000-lossless", "MONOCHROME2"))
    for i in range(48):
        syntax, photometric = syntaxes[i % 3]
        path = corpora[48] / f"clip_{i:02d}.dcm"
        write_phantom_dicom(path, seed=i, n_frames=40, size=size, transfer_syntax=syntax,
                            photometric=photometric, text="PLANTED GENERAL HOSPITAL 12:34:56")
        if i < 24:  # a hard link: a build follows no symbolic link that leaves its raw folder
            corpora[24].mkdir(parents=True, exist_ok=True)
            os.link(path, corpora[24] / path.name)
    recipes = {}
    for text in ("off", "mask"):
        spec = {"organ": "liver", "input": "dicom", "classes": ["x"], "label": {"constant": "x"},
                "sampling": {"every_n": 2}, "crop": "auto", "text": text}
        recipes[text] = tmp / f"dicom-{text}.yaml"
        recipes[text].write_text(yaml.safe_dump({"name": "d", "version": "1", "sources": {"scans": spec},
                                                 "dedup": {"threshold": 0},
                                                 "splits": {"kind": "holdout", "validation": 0.5}}))

    def build_dicom(text: str, n: int) -> float:
        out = tmp / f"rel-{text}-{n}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(f"{out}.local", ignore_errors=True)
        return run_measured([sys.executable, "-m", "us4.cli", "build", str(recipes[text]), "--raw",
                             f"scans={corpora[n]}", "--out", str(out), "--workers", str(workers), "--quiet"],
                            ok=(0, 3))[0]

    jobs, frames = {}, {}
    for n, raw in corpora.items():  # the plain loop makes what the build kept: these frames, crops, colours
        build_dicom("off", n)
        out = tmp / f"rel-off-{n}"
        videos = open_release(out).videos(["video_id", "frame_indices", "crop_box", "colour", "n_kept"]).to_pylist()
        with open(Path(f"{out}.local") / "ids.csv", newline="") as f:
            ids = {row["video_id"]: row["path"] for row in csv.DictReader(f)}
        jobs[n] = [(str(raw / ids[v["video_id"]]), list(v["frame_indices"]), list(v["crop_box"]), v["colour"], 1)
                   for v in videos]
        frames[n] = sum(v["n_kept"] for v in videos)
    runs: dict[str, list[float]] = {"build_24": [], "build_48": [], "plain_24": [], "plain_48": [], "text_24": []}
    for _ in range(repeats):
        for n in corpora:
            runs[f"build_{n}"].append(build_dicom("off", n))
            runs[f"plain_{n}"].append(timed_pool(plain_dicom, jobs[n], workers))
        runs["text_24"].append(build_dicom("mask", 24))
    m = {k: statistics.median(v) for k, v in runs.items()}
    step_build, step_plain = m["build_48"] - m["build_24"], m["plain_48"] - m["plain_24"]
    print(f"DICOM case, {size[0]}x{size[1]} frames: 24 and 48 phantom multi-frame files (RLE, JPEG baseline, "
          f"JPEG 2000), {frames[24]} and {frames[48]} frames kept; medians of {repeats}")
    for name, values in runs.items():
        print(f"  runs {name:10s} " + " ".join(f"{v:6.2f}" for v in values))
    for n in corpora:
        print(f"  {n} files: us4 build {m[f'build_{n}']:6.2f} s ({frames[n] / m[f'build_{n}']:6.1f} frames/s), "
              f"plain pydicom + crop + PNG {m[f'plain_{n}']:6.2f} s ({frames[n] / m[f'plain_{n}']:6.1f} frames/s): "
              f"ratio {m[f'build_{n}'] / m[f'plain_{n}']:5.2f}  (target <= 1.25)")
    print(f"  per frame, 24 -> 48 files: build {1000 * step_build / (frames[48] - frames[24]):.2f} ms, plain "
          f"{1000 * step_plain / (frames[48] - frames[24]):.2f} ms: ratio {step_build / step_plain:5.2f}; "
          f"a build's fixed cost about {m['build_24'] - step_build:.2f} s")
    checked = 3 * len(jobs[24])  # first, middle and last kept frame of each clip
    extra = m["text_24"] - m["build_24"]
    print(f"  text: mask, 24 files: {m['text_24']:.2f} s (+{extra:.2f} s for {checked} frames checked: "
          f"{checked / max(extra, 1e-9):.1f} frames/s of text check, {workers} processes)")


def limit_clip(path: str) -> int:
    """The lossless limit of a clip: PyAV decodes every frame (one thread, as the build), its luma
    plane goes through the build's range mapping, and the build's encoder writes it at level 1."""
    import av
    import numpy as np
    from PIL import Image

    from us4.media.decode import limited_to_full
    from us4.media.pixels import encode_png

    full_range = limited_to_full(np.arange(256, dtype=np.uint8)).tolist()
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        for frame in container.decode(stream):
            p = frame.planes[0]
            img = Image.frombuffer("L", (p.width, p.height), p, "raw", "L", p.line_size, 1)
            if not (frame.format.name.startswith("yuvj") or int(frame.color_range or 0) == 2):
                img = img.point(full_range)
            encode_png(np.asarray(img), 1)
            n += 1
    return n


def stage_costs(clips: list[Path]) -> tuple[int, dict[str, float]]:
    """CPU seconds of each step the build takes per frame, in this one process, over `clips`
    (every frame, crop auto, as the BLUES case): what the build does beyond the lossless limit."""
    import numpy as np

    from us4.builder.ingest import _central
    from us4.media import detect_scan_region, dhash, encode_png, near_duplicate, pixel_sha256, probe, thumbnail
    from us4.media.decode import decode

    spent: dict[str, float] = {}
    frames = 0

    def step(name: str, fn, *args):
        start = time.process_time()
        out = fn(*args)
        spent[name] = spent.get(name, 0.0) + time.process_time() - start
        return out

    for clip in clips:
        info = step("probe", probe, clip)
        decoded = step("decode (limit)", decode, clip, range(info.n_frames))
        box = step("scan region", detect_scan_region, [f.grey for f in decoded])
        previous = None
        for frame in decoded:
            grey = np.ascontiguousarray(box.apply(frame.grey))
            if previous is not None:
                step("near-duplicate test", near_duplicate, previous, grey, 0.5)
            previous = grey
            step("PNG level 1 (limit)", encode_png, grey, 1)
            step("pixel sha256", pixel_sha256, grey)
            step("difference hash", dhash, _central(grey))
            step(THUMBNAIL_STEP, thumbnail, grey)
            frames += 1
    return frames, spent


#: made only where the recipe groups clips by near-duplicate frames (POCUS), not in the BLUES case
THUMBNAIL_STEP = "64 px thumbnail"


def copy_clips(names: list[Path], to: Path) -> None:
    """Clips into a raw folder of their own (a build follows no link that leaves its raw folder)."""
    to.mkdir(parents=True)
    for clip in names:
        shutil.copyfile(clip, to / clip.name)


def blues_case(blues: Path, tmp: Path, workers: int, repeats: int) -> None:
    import yaml

    spec = yaml.safe_load((REPO / "pipelines" / "blues.yaml").read_text())
    spec["sources"]["blues"].update(sampling={"every_n": 1}, crop="auto", text="off")
    recipe = tmp / "blues-every-frame.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    clips = sorted((blues / "lus_videos").iterdir())
    # a clip of each of 5 patients (one a fold) and the sheets: what a build costs whatever its size
    one = tmp / "blues-five"
    firsts = {clip.name.split("_")[1]: clip for clip in reversed(clips)}
    copy_clips(sorted(firsts.values())[:5], one / "lus_videos")
    for sheet in ("clinical_variables.csv", "severity.csv"):
        shutil.copyfile(blues / sheet, one / sheet)

    def build_blues(raw: Path, out: Path) -> tuple[float, int]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(f"{out}.local", ignore_errors=True)
        return run_measured([sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"blues={raw}",
                             "--out", str(out), "--workers", str(workers), "--quiet"], ok=(0, 3))

    imports = [sys.executable, "-c", "import us4.cli, us4.builder.run, us4.builder.ingest, us4.builder.writer"]
    runs: dict[str, list[float]] = {"build": [], "limit": [], "build_cpu": [], "limit_cpu": [], "five_clips": [],
                                    "imports": []}
    peaks = []
    for _ in range(repeats):  # interleaved, so that a noisy neighbour hits every variant alike
        cpu = children_cpu()
        wall, peak = build_blues(blues, tmp / "rel-blues")
        runs["build_cpu"].append(children_cpu() - cpu)
        runs["build"].append(wall)
        peaks.append(peak)
        cpu = children_cpu()
        runs["limit"].append(timed_pool(limit_clip, [str(c) for c in clips], workers))
        runs["limit_cpu"].append(children_cpu() - cpu)
        runs["five_clips"].append(build_blues(one, tmp / "rel-blues-five")[0])
        runs["imports"].append(run_measured(imports)[0])
    from us4.release.read import open_release

    frames = open_release(tmp / "rel-blues").lock.counts.frames
    m = {k: statistics.median(v) for k, v in runs.items()}
    print(f"COVID-BLUES, every frame: {len(clips)} clips, {frames} frames kept, {workers} worker processes; "
          f"medians of {repeats} interleaved runs")
    for name, values in runs.items():
        print(f"  runs {name:10s} " + " ".join(f"{v:6.2f}" for v in values))
    print(f"  us4 build:                    {m['build']:7.2f} s  {frames / m['build']:7.1f} frames/s  "
          f"peak memory {max(peaks) / 2**20:6.1f} MiB  (target < 600 MiB)")
    print(f"  lossless limit loop:          {m['limit']:7.2f} s  {frames / m['limit']:7.1f} frames/s")
    print(f"  ratio build / lossless limit: {m['build'] / m['limit']:5.2f}  (target <= 1.15)")
    print(f"  CPU seconds, all processes:   build {m['build_cpu']:.1f}, limit loop {m['limit_cpu']:.1f}: "
          f"ratio {m['build_cpu'] / m['limit_cpu']:.2f}")
    print(f"  fixed cost: a build of five clips (one a fold) {m['five_clips']:.2f} s, of which starting Python and "
          f"importing what a build imports {m['imports']:.2f} s")
    n, spent = stage_costs(clips[::6])
    print(f"  CPU ms a frame of each step, one process, {n} frames of every 6th clip (limit: the loop's steps):")
    for name, seconds in spent.items():
        print(f"    {name:22s} {1000 * seconds / n:6.3f}" + ("  (only where a recipe groups near-duplicates: "
                                                           "not in this build, not in 'all')" if name == THUMBNAIL_STEP else ""))
    total = sum(seconds for name, seconds in spent.items() if name != THUMBNAIL_STEP)
    limit = sum(seconds for name, seconds in spent.items() if "(limit)" in name)
    print(f"    {'all':22s} {1000 * total / n:6.3f}  ({total / n * 1000:.2f} s per 1,000 frames on one core, before "
          f"writing the cache and the shards; {total / limit:.2f}x the limit's steps)")


def contract_cost(release: Path, repeats: int = 20) -> float:
    """Seconds a build spends on the typed lock and the path checks: validating the lock it
    writes and reads, and checking every path it names (median of `repeats`)."""
    from us4.contract.lock import read_lock
    from us4.paths import inside

    data = (release / "release.json").read_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lock = read_lock(data)
        for name in lock.files():
            inside(release, name)
        times.append(time.perf_counter() - start)
    return 2 * statistics.median(times)  # the build validates its lock when writing it and when reading it back


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
    ap.add_argument("--workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each measurement; medians are reported")
    ap.add_argument("--no-dicom", action="store_true", help="skip the DICOM case")
    ap.add_argument("--blues", default=str(REPO.parent / "shared" / "blues"),
                    help="COVID-BLUES as its authors publish it (skipped where absent)")
    args = ap.parse_args()
    raw = Path(args.raw)
    sys.path.insert(0, str(REPO))
    from us4.system import available_cores

    args.workers = args.workers or available_cores()
    from us4.recipe import load_recipe
    from us4.release.read import open_release

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (Path(args.blues) / "lus_videos").is_dir():
            blues_case(Path(args.blues), tmp, args.workers, args.repeats)
        else:
            print(f"COVID-BLUES case skipped: no {Path(args.blues) / 'lus_videos'}")
        # half of the clips, to see whether memory grows with the clip count
        half = tmp / "half"
        clips = sorted((raw / "pocus_videos" / "convex").iterdir())
        copy_clips(clips[: len(clips) // 2], half / "pocus_videos" / "convex")
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
        jpg = tmp / "jpg"
        jpg.mkdir()
        pocovid_jobs = [(str(clip_root / v["path"]), str(jpg)) for v in videos]
        runs: dict[str, list[float]] = {"build": [wall], "plain": [], "pocovid_1": [], "pocovid_n": []}
        for r in range(args.repeats):  # interleaved, so that a noisy neighbour hits every variant alike
            if r:
                shutil.rmtree(tmp / "rel")
                runs["build"].append(build(raw, tmp / "rel", args.workers)[0])
            runs["plain"].append(timed_pool(plain_clip, plain_jobs, args.workers))
            runs["pocovid_1"].append(timed_pool(pocovid_clip, pocovid_jobs, 1))
            runs["pocovid_n"].append(timed_pool(pocovid_clip, pocovid_jobs, args.workers))
        wall, plain, pocovid_1, pocovid_n = (statistics.median(runs[k]) for k in runs)
        contract = contract_cost(tmp / "rel")
        if not args.no_dicom:
            for size in DICOM_SIZES:
                dicom_case(tmp, args.workers, args.repeats, size)

    n_half = len(clips) // 2
    print(f"POCUS sample: {len(videos)} clips built, {frames} frames, {args.workers} worker processes; "
          f"medians of {args.repeats} interleaved runs")
    for name, values in runs.items():
        print(f"  runs {name:10s} " + " ".join(f"{v:6.2f}" for v in values))
    print(f"us4 build (all clips):        {wall:7.2f} s  {frames / wall:7.1f} frames/s  peak memory {peak / 2**20:7.1f} MiB")
    print(f"us4 build ({n_half} of {len(clips)} clips):   {half_wall:7.2f} s                     peak memory {half_peak / 2**20:7.1f} MiB")
    print(f"plain decode + crop + PNG:    {plain:7.2f} s")
    print(f"POCOVID rule, 1 process:      {pocovid_1:7.2f} s")
    print(f"POCOVID rule, {args.workers} processes:    {pocovid_n:7.2f} s")
    print(f"ratio build / plain loop:           {wall / plain:5.2f}  (target <= 1.25)")
    print(f"ratio build / POCOVID (as run):     {wall / pocovid_1:5.2f}  (target <= 0.8)")
    print(f"ratio build / POCOVID ({args.workers} processes): {wall / pocovid_n:5.2f}")
    print(f"peak memory all / half clips:       {peak / half_peak:5.2f}  (target: ~1, under 1 GiB)")
    print(f"typed lock + path checks: {contract * 1000:.1f} ms a build = {100 * contract / wall:.2f} % of its wall time "
          "(target < 2 %)")


if __name__ == "__main__":
    main()
