"""What the burned-in text check costs beside decoding, measured in one run, one process.

    python benchmarks/text.py [POCUS_DATA_DIR] [--probe convex] [--clips N]

For each clip of the POCUS sample (convex by default): decode its first, middle and last
frame (`frames_to_check`; decoding runs from the start to the last of them), find the
scan region of those frames' grey pictures, and run `detect_text` inside it. Prints:
- frames per second of the text check and of the decode of the same frames, and the
  ratio of their times (text check / decode);
- the engine's start-up time (once per process, not in the ratio);
- every clip with text found: the boxes, the text read and the scores.
Needs the `text` extra (rapidocr, onnxruntime).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "pocus" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="POCUS data folder (holds pocus_videos/)")
    ap.add_argument("--probe", default="convex", help="probe subfolder of pocus_videos (default convex)")
    ap.add_argument("--clips", type=int, default=0, help="only the first N clips (default all)")
    args = ap.parse_args()

    from us4.media import decode, detect_scan_region, detect_text, frames_to_check, probe, text_engine_versions
    from us4.media.text import _engine

    folder = args.data / "pocus_videos" / args.probe
    clips = sorted(p for p in folder.iterdir() if p.is_file())
    if args.clips:
        clips = clips[: args.clips]
    if not clips:
        raise SystemExit(f"no clips under {folder}")

    t = time.perf_counter()
    _engine()
    start_up = time.perf_counter() - t

    n_frames = 0
    t_decode = t_text = 0.0
    flagged = []
    for path in clips:
        wanted = frames_to_check(probe(path).n_frames)
        t = time.perf_counter()
        frames = decode(path, wanted)
        t_decode += time.perf_counter() - t
        greys = [f.grey for f in frames]
        region = detect_scan_region(greys)
        t = time.perf_counter()
        boxes = detect_text(greys, region)
        t_text += time.perf_counter() - t
        n_frames += len(greys)
        if boxes:
            flagged.append((path.name, region, boxes))

    print(f"clips {len(clips)} ({folder}), frames checked {n_frames} (first, middle, last of each)")
    print(f"text check  {n_frames / t_text:8.1f} frames/s  ({t_text:.2f} s)")
    print(f"decode      {n_frames / t_decode:8.1f} frames/s  ({t_decode:.2f} s; from the start to the last wanted frame)")
    print(f"ratio text check / decode time: {t_text / t_decode:.2f}")
    print(f"engine start-up (once per process): {start_up:.2f} s")
    print(f"engine: {text_engine_versions()}")
    print(f"clips with text found: {len(flagged)} of {len(clips)}")
    for name, region, boxes in flagged:
        print(f"  {name}  scan region {region.as_list()}")
        for b in boxes:
            print(f"    [{b.x}, {b.y}, {b.w}, {b.h}] det {b.det_score:.2f} read {b.text!r} ({b.score:.2f})")


if __name__ == "__main__":
    main()
