"""Probe one clip: container, codec, rate, frame count, size, rotation.

Probing never decodes more than the first frame (needed for the rotation, which
FFmpeg only exposes as frame side data) and never converts pixels.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av

from .gate import check_file, check_frame_size, reading
from .types import ClipInfo, MediaError

__all__ = ["probe", "VIDEO_SUFFIXES", "open_container", "rotation_of", "ffmpeg_message", "present_entries",
           "stated_size"]

#: File suffixes (lower case) treated as video when a folder is walked.
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".gif", ".mkv", ".webm",
    ".wmv", ".ogv", ".3gp", ".ts", ".mts", ".m2ts", ".flv",
})

# ISO-BMFF major brands: FFmpeg reports one demuxer name for the whole family,
# so the brand is what tells a QuickTime .mov from an .mp4.
_BRANDS = {"qt": "mov", "3gp": "3gp", "3g2": "3g2", "mj2": "mj2", "mjp2": "mj2"}


def stated_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of the first video stream as its header states it ((0, 0) where it does
    not), without decoding a frame."""
    container, stream = open_container(path, skip_frames=True)
    try:
        return int(stream.codec_context.width), int(stream.codec_context.height)
    finally:
        container.close()


def ffmpeg_message(exc: BaseException) -> str:
    """FFmpeg's own words for `exc`, without PyAV's errno prefix and file name."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip() or type(exc).__name__


def open_container(path: str | os.PathLike[str], skip_frames: bool = False):
    """Open `path` for reading and return (container, first video stream).

    Opening decodes a few frames (FFmpeg learns an H.264 stream's decode delay so), unless
    `skip_frames`: then the stream's parameters are what its header states, pixel format aside.
    Raises MediaError for a missing, empty, unopenable or non-video file.
    """
    p = check_file(path)
    with reading(path, lambda exc: f"cannot open: {ffmpeg_message(exc)}", (av.error.FFmpegError, OSError, ValueError)):
        container = av.open(str(p), mode="r", options={"skip_frame": "all"} if skip_frames else None)
    if not container.streams.video:
        container.close()
        raise MediaError(path, "not a video (no video stream)")
    stream = container.streams.video[0]
    try:
        ctx = stream.codec_context
        name = ctx.name if ctx is not None else None
        is_decoder = ctx is not None and ctx.is_decoder
    except (av.error.FFmpegError, AttributeError, ValueError):
        name, is_decoder = None, False
    if not name or name == "none" or not is_decoder:
        container.close()
        # FFmpeg names no codec when it does not recognise the stream's tag at all.
        raise MediaError(path, f"unsupported codec {name!r}" if name and name != "none"
                         else "unsupported codec (unknown to this FFmpeg build)")
    return container, stream


def rotation_of(frame) -> int:
    """Counter-clockwise degrees (0/90/180/270) that make `frame` upright."""
    try:
        deg = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return int(round(deg / 90.0)) % 4 * 90


def _container_name(container, path: Path) -> str:
    names = container.format.name.split(",")
    if "mov" in names and "mp4" in names:
        brand = container.metadata.get("major_brand", "").strip().lower()
        if not brand:
            return "mov"  # pre-ISO QuickTime files carry no ftyp brand
        for prefix, name in _BRANDS.items():
            if brand.startswith(prefix):
                return name
        return "mp4"
    if len(names) > 1:
        # Multi-name demuxers (matroska,webm): prefer the name the file claims.
        suffix = path.suffix.lower().lstrip(".")
        return suffix if suffix in names else names[0]
    return names[0]


def _rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate.denominator and 0 < float(rate) < 10_000:
            return rate
    return None


def _scan(container, stream, count: bool):
    """One demux pass: the first decoded frame, and the packet count if `count`.

    Only packets up to the first frame are decoded; the rest are just demuxed.
    Edit-list-discarded packets never leave the decoder, so they are not counted.
    """
    first, n = None, 0
    for pkt in container.demux(stream):
        if pkt.size and not pkt.is_discard:
            n += 1
        if first is None:
            frames = pkt.decode()  # the final empty packet flushes the decoder
            if frames:
                first = frames[0]
                if not count:
                    break
    return first, n


def present_entries(stream, file_size: int) -> int | None:
    """Index entries whose bytes lie inside the file, or None without an index.

    A file cut short keeps its header (and its declared frame count) but loses the
    tail; the demuxer's index still points past the end of the file.
    """
    try:
        entries = stream.index_entries
        n = len(entries)
    except (AttributeError, TypeError):
        return None
    if n == 0:
        return None
    return sum(1 for i in range(n) if entries[i].pos + entries[i].size <= file_size)


def probe(path: str | os.PathLike[str], max_pixels: int | None = None) -> ClipInfo:
    """Describe the first video stream of `path`; raise MediaError if it cannot be read, or if
    its frames have more than `max_pixels` pixels (checked on the stream's header before the
    file is opened for decoding, and on the first frame).

    >>> info = probe("clip.mp4")                      # doctest: +SKIP
    >>> info.fps, info.n_frames, (info.width, info.height)
    (15.0, 48, (224, 192))
    """
    p = Path(path)
    if max_pixels is not None:  # before the open below decodes any frame
        check_frame_size(path, *stated_size(p), max_pixels)
    container, stream = open_container(p)
    try:
        declared = int(stream.frames or 0)
        if declared > 0:
            present = present_entries(stream, p.stat().st_size)
            if present is not None and present < declared:
                raise MediaError(
                    path, f"truncated: container declares {declared} frames, only {present} are present")
        with reading(path, lambda exc: f"cannot decode: {ffmpeg_message(exc)}", (av.error.FFmpegError,)):
            first, n_packets = _scan(container, stream, count=declared <= 0)
        if first is None:
            raise MediaError(path, "no decodable frames")
        check_frame_size(path, first.width, first.height, max_pixels)  # a header that stated no size
        n_frames, counted = (declared, False) if declared > 0 else (n_packets, True)

        tb = stream.time_base
        if stream.duration and tb:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0

        rate = _rate(stream)
        if rate is not None:
            fps = float(rate)
        elif duration > 0:
            fps = n_frames / duration
        else:
            raise MediaError(path, "no frame rate (no rate and no duration)")
        if not math.isfinite(fps) or fps <= 0:
            raise MediaError(path, "no frame rate (no rate and no duration)")
        if duration <= 0:
            duration = n_frames / fps

        rotation = rotation_of(first)

        ctx = stream.codec_context
        width, height = int(first.width), int(first.height)
        if rotation in (90, 270):
            width, height = height, width
        pix_fmt = (ctx.pix_fmt or (first.format.name if first.format else "")) or "unknown"
        return ClipInfo(
            path=str(path),
            container=_container_name(container, p),
            codec=ctx.name,
            fps=fps,
            n_frames=n_frames,
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            pix_fmt=pix_fmt,
            frames_counted=counted,
        )
    finally:
        container.close()
