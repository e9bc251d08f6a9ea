"""Synthetic ultrasound clips with a known scan region, for the demo and for tests.

A phantom frame is black, with a sector (fan from an apex above the top edge, as a
convex probe draws it) or a rectangle of slowly moving Rayleigh speckle, a pleural
line with B-lines and a moving ellipse inside it, and static burned-in text, a clock
and a depth scale bar outside it. Pixels depend only on the seed and the arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..media import Box

__all__ = ["write_phantom_clip", "write_broken_files", "phantom_layout", "PhantomLayout"]


@dataclass(frozen=True)
class PhantomLayout:
    """Where things are in a phantom frame: the scan region and the burned-in UI."""

    scan: Box
    text: tuple[Box, ...]   # the title, the clock and the scale bar, each outside `scan`
    mask: np.ndarray        # H x W bool, the exact scan region


def _h264_available() -> bool:
    try:
        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # pragma: no cover - depends on the FFmpeg build
        return False


def _codec_for(suffix: str) -> tuple[str, str, dict[str, str]]:
    """(codec, pix_fmt, codec options) for a file suffix."""
    # Byte-identical output needs both: threads=1 (else the core count shapes the
    # stream) and mbtree=0 (macroblock-tree rate control gave a different stream on
    # every run here, even single-threaded).
    x264 = ("libx264", "yuv420p", {"crf": "16", "preset": "veryfast", "threads": "1",
                                   "x264-params": "mbtree=0"})
    table = {
        ".mp4": x264 if _h264_available() else ("mpeg4", "yuv420p", {}),
        ".m4v": x264 if _h264_available() else ("mpeg4", "yuv420p", {}),
        ".mov": x264 if _h264_available() else ("mjpeg", "yuvj420p", {}),
        ".avi": ("mpeg4", "yuv420p", {}),
        ".mpeg": ("mpeg2video", "yuv420p", {}),
        ".mpg": ("mpeg2video", "yuv420p", {}),
        ".gif": ("gif", "gray", {}),
    }
    if suffix not in table:
        raise ValueError(f"unsupported phantom suffix {suffix!r}; use one of {sorted(table)}")
    return table[suffix]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def phantom_layout(size: tuple[int, int] = (224, 192), shape: str = "sector",
                   text: str | None = "US4 PHANTOM 12cm") -> PhantomLayout:
    """The geometry `write_phantom_clip` draws for `size` (w, h) and `shape`."""
    w, h = size
    if shape not in ("sector", "rect"):
        raise ValueError(f"shape must be 'sector' or 'rect', got {shape!r}")
    top = max(12, int(round(0.10 * h)))       # band for the title and clock
    side = max(12, int(round(0.10 * w)))      # room for the scale bar
    bottom = h - max(2, int(round(0.02 * h)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "sector":
        # A convex footprint: the apex sits above the frame, so the fan's top is an arc.
        depth = bottom - top
        r0 = 0.30 * depth
        r1 = r0 + depth
        cx = w / 2.0
        # Widest at the bottom corners: r1 * sin(half) must stay inside the side margins.
        half = min(math.radians(34.0), math.asin(min(1.0, (cx - side) / r1)))
        # The inner arc's ends are its highest points: put them, not its middle, at `top`.
        ay = top - r0 * math.cos(half)
        r1 = bottom - ay
        dx, dy = xx + 0.5 - cx, yy + 0.5 - ay
        rad = np.hypot(dx, dy)
        ang = np.arctan2(dx, dy)
        mask = (rad >= r0) & (rad <= r1) & (np.abs(ang) <= half)
    else:
        mask = (xx >= side) & (xx < w - side) & (yy >= top) & (yy < bottom)
    ys, xs = np.nonzero(mask)
    scan = Box(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))

    boxes = []
    fsize = max(8, int(round(0.055 * h)))
    font = _font(fsize)
    if text:
        l, t, r, b = font.getbbox(text)
        boxes.append(Box(2 + l, 1 + t, r - l, b - t))
        l, t, r, b = font.getbbox("12:34")
        boxes.append(Box(w - 3 - (r - l), 1 + t, r - l, b - t))
    bar_x = min(w - 4, scan.x + scan.w + max(3, side // 4))
    boxes.append(Box(bar_x, scan.y, min(4, w - bar_x), scan.h))
    return PhantomLayout(scan=scan, text=tuple(boxes), mask=mask)


def _ui_layer(size: tuple[int, int], layout: PhantomLayout, text: str | None) -> np.ndarray:
    w, h = size
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    fsize = max(8, int(round(0.055 * h)))
    font = _font(fsize)
    if text:
        draw.text((2, 1), text, fill=235, font=font)
        l, _, r, _ = font.getbbox("12:34")
        draw.text((w - 3 - (r - l) - l, 1), "12:34", fill=200, font=font)
    bar = layout.text[-1]
    draw.line([(bar.x, bar.y), (bar.x, bar.y + bar.h - 1)], fill=180)
    for y in range(bar.y, bar.y + bar.h, max(4, bar.h // 12)):
        draw.line([(bar.x, y), (bar.x + bar.w - 1, y)], fill=180)
    return np.asarray(img, dtype=np.uint8)


def phantom_frames(seed: int, n_frames: int, size: tuple[int, int], shape: str, text: str | None,
            colour: bool, frozen: int, b_lines: int | None = None,
            consolidation: bool = True) -> tuple[np.ndarray, PhantomLayout]:
    w, h = size
    rng = np.random.default_rng(seed)
    layout = phantom_layout(size, shape, text)
    mask, scan = layout.mask, layout.scan
    ui = _ui_layer(size, layout, text)

    # Speckle: a Rayleigh field with 2-px grains that drifts sideways, blended with a
    # fresh field each frame so it also decorrelates (as tissue and probe motion do).
    hh, ww = (h + 1) // 2, (w + 1) // 2
    drift = rng.rayleigh(1.0, size=(hh, ww + n_frames)).astype(np.float32)
    fresh = rng.rayleigh(1.0, size=(n_frames, hh, ww)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rel = np.clip((yy - scan.y) / max(1, scan.h), 0.0, 1.0)
    envelope = (1.0 - 0.55 * rel) * 70.0
    pleura_y = scan.y + 0.28 * scan.h
    phase = rng.uniform(0, 2 * math.pi, size=4)
    n_blines = 2 + int(rng.integers(0, 2))  # drawn even when fixed: the other draws stay put
    n_blines = n_blines if b_lines is None else b_lines
    bline_x0 = scan.x + scan.w * rng.uniform(0.25, 0.75, size=n_blines)
    ell = (scan.x + scan.w * rng.uniform(0.3, 0.7), scan.y + scan.h * rng.uniform(0.55, 0.75))

    frames = np.zeros((n_frames, h, w, 3), dtype=np.uint8)
    freeze_at = max(1, n_frames // 2 - frozen // 2) if frozen > 0 else n_frames
    for t in range(n_frames):
        if freeze_at <= t < freeze_at + frozen:
            frames[t] = frames[freeze_at - 1]
            continue
        s = t * 0.5
        sp_half = 0.75 * drift[:, t: t + ww] + 0.45 * fresh[t]
        sp = np.repeat(np.repeat(sp_half, 2, axis=0), 2, axis=1)[:h, :w]
        img = envelope * sp
        # Pleural line: bright, gently sliding up and down (breathing).
        py = pleura_y + 2.5 * math.sin(0.35 * s + phase[0])
        img += 120.0 * np.exp(-((yy - py) / 2.0) ** 2)
        # B-lines: bright vertical rays below the pleura that sweep sideways.
        for i, x0 in enumerate(bline_x0):
            bx = x0 + 0.06 * scan.w * math.sin(0.3 * s + phase[1] + i)
            img += (yy > py) * 55.0 * np.exp(-((xx - bx) / 3.0) ** 2) * (1.0 - 0.6 * rel)
        # A moving ellipse (a consolidation, say).
        ex = ell[0] + 0.08 * scan.w * math.sin(0.2 * s + phase[2])
        ey = ell[1] + 0.04 * scan.h * math.cos(0.25 * s + phase[3])
        if consolidation:
            img += 60.0 * (((xx - ex) / (0.10 * scan.w)) ** 2 + ((yy - ey) / (0.05 * scan.h)) ** 2 <= 1.0)
        grey = np.where(mask, np.clip(img, 0, 255), 0).astype(np.uint8)
        grey = np.maximum(grey, ui)
        frame = np.repeat(grey[..., None], 3, axis=2)
        if colour:
            # Doppler-like blob: red towards the probe, blue away, pulsing with the heart.
            cx, cy = scan.x + 0.5 * scan.w, scan.y + 0.5 * scan.h
            rx, ry = 0.14 * scan.w, 0.10 * scan.h
            blob = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0) & mask
            strength = 0.6 + 0.4 * math.sin(0.8 * s)
            red = blob & (xx < cx)
            blue = blob & (xx >= cx)
            frame[red] = (int(220 * strength), 30, 30)
            frame[blue] = (30, 60, int(230 * strength))
        frames[t] = frame
    return frames, layout


def write_phantom_clip(path, *, seed: int, n_frames: int = 48, size: tuple[int, int] = (224, 192),
                       fps: float = 15.0, shape: str = "sector", text: str | None = "US4 PHANTOM 12cm",
                       colour: bool = False, frozen: int = 0, b_lines: int | None = None,
                       consolidation: bool = True) -> Box:
    """Write a synthetic ultrasound clip to `path` and return its true scan region.

    Container and codec follow the suffix: .mp4/.mov h264 (mpeg4/mjpeg without
    libx264), .avi mpeg4, .mpeg mpeg2video, .gif gif (GIF stores delays in 1/100 s,
    so its rate is 100/round(100/fps)). `frozen` consecutive frames in the middle
    repeat the frame before them. `size` is (width, height), both even. `b_lines` fixes
    the number of B-lines (default: 2 or 3, drawn from the seed) and `consolidation`
    draws the moving bright ellipse: together they let a phantom set carry a class signal.
    """
    path = Path(path)
    w, h = size
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    if w < 32 or h < 32 or w % 2 or h % 2:
        raise ValueError(f"size must be even and at least 32 x 32, got {size}")
    if frozen < 0 or frozen >= n_frames:
        raise ValueError("frozen must be in [0, n_frames)")
    codec, pix_fmt, options = _codec_for(path.suffix.lower())
    if colour and codec == "gif":
        pix_fmt = "rgb8"
    frames, layout = phantom_frames(seed, n_frames, size, shape, text, colour, frozen, b_lines, consolidation)

    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    container_opts = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
    with av.open(str(path), mode="w", options=container_opts) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if options:
            stream.codec_context.options = options
        if codec in ("mpeg4", "mpeg2video"):
            stream.codec_context.bit_rate = 4_000_000
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return layout.scan


def write_broken_files(directory) -> dict[str, Path]:
    """Write files every reader must reject: empty, text named .mp4, truncated mp4, audio only.

    Keys: "empty", "not_video", "truncated", "audio_only" (the last only when this
    PyAV build can encode AAC).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    p = d / "empty.mp4"
    p.write_bytes(b"")
    out["empty"] = p

    p = d / "not_a_video.mp4"
    p.write_text("this is a text file, not a video\n" * 20, encoding="utf-8")
    out["not_video"] = p

    # faststart puts the index first, so the cut file still opens and declares all frames.
    whole = d / "whole.mp4"
    write_phantom_clip(whole, seed=7, n_frames=48)
    data = whole.read_bytes()
    whole.unlink()
    p = d / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])
    out["truncated"] = p

    try:
        p = d / "audio_only.mp4"
        with av.open(str(p), mode="w") as container:
            stream = container.add_stream("aac", rate=16000)
            stream.layout = "mono"
            t = np.arange(16000, dtype=np.float32) / 16000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            for i in range(0, tone.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, i: i + 1024]),
                                                   format="fltp", layout="mono")
                frame.sample_rate = 16000
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        out["audio_only"] = p
    except Exception:  # pragma: no cover - an FFmpeg build without an AAC encoder
        (d / "audio_only.mp4").unlink(missing_ok=True)
    return out
