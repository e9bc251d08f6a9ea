"""Lossless PNG encoders on real ultrasound frames, measured in one run.

    python benchmarks/png.py [CLIPS_DIR ...] [--frames 1500]

Decodes the grey frames (the build's luma plane) of clips spread over each folder (default:
../shared/blues/lus_videos and ../shared/pocus/data/pocus_videos/convex) and encodes each with:
Pillow (the encoder of us4 0.3 and earlier) at level 1, OpenCV at level 1 with its default,
FILTERED and RLE strategies, and us4's own (`us4.media.pixels.encode_png`: filter Sub, zlib RLE)
at level 1 and 6. For each: milliseconds a frame (one process), mean size, the time relative
to Pillow level 1, and whether every frame decodes back to its pixels. Needs the `bench` extra
(opencv-python-headless).
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOLDERS = (REPO.parent / "shared" / "blues" / "lus_videos", REPO.parent / "shared" / "pocus" / "data" / "pocus_videos" / "convex")


def grey_frames(folder: Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` frames from clips spread over the folder, as the build decodes them."""
    from us4.media.decode import decode

    clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mov", ".gif"))
    frames: list[np.ndarray] = []
    for clip in clips[:: max(1, len(clips) // 12)]:
        frames += [f.grey for f in decode(clip, range(60))]
        if len(frames) >= limit:
            break
    return frames[:limit]


def encoders() -> dict:
    import cv2
    from PIL import Image

    from us4.media.pixels import encode_png

    def pillow(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=1, optimize=False)
        return buf.getvalue()

    def opencv(strategy: int | None):
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] + ([cv2.IMWRITE_PNG_STRATEGY, strategy] if strategy is not None else [])
        return lambda a: cv2.imencode(".png", a, params)[1].tobytes()

    return {"Pillow, level 1": pillow, "OpenCV, level 1": opencv(None),
            "OpenCV, level 1, FILTERED": opencv(cv2.IMWRITE_PNG_STRATEGY_FILTERED),
            "OpenCV, level 1, RLE": opencv(cv2.IMWRITE_PNG_STRATEGY_RLE),
            "us4 (Sub + RLE), level 1": lambda a: encode_png(a, 1),
            "us4 (Sub), level 6": lambda a: encode_png(a, 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, default=[f for f in FOLDERS if f.is_dir()])
    ap.add_argument("--frames", type=int, default=1500, help="frames taken from each folder")
    args = ap.parse_args()
    from PIL import Image

    for folder in args.folders:
        frames = grey_frames(folder, args.frames)
        h, w = frames[0].shape
        print(f"{folder}: {len(frames)} grey frames, {w}x{h} the first")
        base = None
        for name, encode in encoders().items():
            start = time.perf_counter()
            out = [encode(a) for a in frames]
            ms = 1000 * (time.perf_counter() - start) / len(frames)
            base = base or ms
            same = all(np.array_equal(np.asarray(Image.open(io.BytesIO(b))), a) for b, a in zip(out, frames, strict=True))
            print(f"  {name:28s} {ms:6.2f} ms a frame  x{ms / base:4.2f}  {sum(map(len, out)) / len(out) / 1024:7.1f} KiB"
                  f"  {'lossless' if same else 'PIXELS DIFFER'}")


if __name__ == "__main__":
    main()
