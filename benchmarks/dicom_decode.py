"""DICOM decoding speed of us4.media against plain pydicom, measured in one run.

    python benchmarks/dicom_decode.py [--frames 60] [--size 640x480] [--repeat 5]

Writes phantom multi-frame files (RLE MONOCHROME2, RLE PALETTE COLOR, JPEG baseline
YBR_FULL_422) and, when present, takes the real echo cine of ../shared/dicom. For each it
prints frames per second of:
- us4: `decode_clip` of every frame (header checks, pinned plugin, frame-by-frame decoding,
  conversion to uint8 grey / RGB),
- plain: `pydicom.dcmread(path).pixel_array` (the whole cine in one call, pydicom's default
  processing: YBR -> RGB, palette indices left as indices),
and their ratio (plain time / us4 time: above 1 means us4 is faster); then the time us4 takes
for 3 evenly spread frames against the plain loop, which has to decode all of them.
Each figure is the best of --repeat runs, one process.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from us4.media import ClipRef, decode_clip
from us4.phantom import write_phantom_dicom

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "dicom" / "US-PAL-8-10x-echo.dcm"


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the phantoms (even)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for short, pi in (("rle", "MONOCHROME2"), ("rle", "PALETTE COLOR"), ("jpeg-baseline", "YBR_FULL_422")):
            p = Path(tmp) / f"{short}-{pi.replace(' ', '_')}.dcm"
            write_phantom_dicom(p, seed=1, n_frames=args.frames, size=(w, h), transfer_syntax=short, photometric=pi)
            files[f"phantom {short} {pi}"] = p
        if REAL.is_file():
            files["real echo (RLE PALETTE COLOR)"] = REAL
        print(f"{'file':40s} {'frames':>6s} {'us4 f/s':>9s} {'plain f/s':>9s} {'plain/us4 time':>14s} "
              f"{'3 frames: plain/us4 time':>24s}")
        for name, path in files.items():
            n = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1))
            ref = ClipRef("dicom", (str(path),))
            ours = best(lambda: decode_clip(ref, range(n)), args.repeat)
            plain = best(lambda: pydicom.dcmread(path).pixel_array, args.repeat)
            three = [0, n // 2, n - 1]
            few = best(lambda: decode_clip(ref, three), args.repeat)
            print(f"{name:40s} {n:6d} {n / ours:9.0f} {n / plain:9.0f} {plain / ours:14.2f} {plain / few:24.2f}")


if __name__ == "__main__":
    main()
