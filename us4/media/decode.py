"""Decode the wanted frames of one clip, and nothing after the last of them.

Planar YUV frames (the codecs of nearly every ultrasound clip) are not converted to
RGB: the grey picture is the luma plane, copied out of the frame and expanded to
full range with a fixed integer table, and the chroma planes are kept as stored for
the colour test and for the few colour (Doppler) clips. No swscale, so the grey
pixels do not depend on which SIMD path FFmpeg picks on a given CPU. Other pixel
8-bit grey frames are their own grey picture; packed RGB (GIF's bgra, say) is
reordered to RGB in numpy (byte for byte what swscale gives). Other formats
(palettes, high bit depths, semi-planar YUV) go through swscale to rgb24 as before.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from .gate import frame_indices, reading
from .pixels import to_grey
from .probe import ffmpeg_message, open_container, present_entries, rotation_of
from .types import DecodedFrame, MediaError

__all__ = ["PACKED_RGB_FORMATS", "YUV_FORMATS", "decode", "limited_to_full"]

#: Planar 8-bit YUV formats read plane by plane, without swscale.
YUV_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})

#: Packed 8-bit RGB formats read directly: name -> (bytes per pixel, offsets of R, G, B).
#: A byte shuffle, identical to swscale's rgb24 output (which on GIF's odd-sized bgra
#: frames took about 3 ms a frame).
PACKED_RGB_FORMATS = {
    "rgb24": (3, (0, 1, 2)), "bgr24": (3, (2, 1, 0)),
    "rgba": (4, (0, 1, 2)), "bgra": (4, (2, 1, 0)), "argb": (4, (1, 2, 3)), "abgr": (4, (3, 2, 1)),
    "rgb0": (4, (0, 1, 2)), "bgr0": (4, (2, 1, 0)), "0rgb": (4, (1, 2, 3)), "0bgr": (4, (3, 2, 1)),
}

_AVCOL_RANGE_JPEG = 2  # FFmpeg's AVColorRange for full ("JPEG") range

#: Limited-range luma (16..235) -> full range (0..255): round((y - 16) * 255 / 219),
#: clipped; exact integers, so the same table everywhere.
_LIMITED_TO_FULL = np.array([min(255, max(0, ((y - 16) * 510 + 219) // 438)) for y in range(256)],
                            dtype=np.uint8)
_LIMITED_TO_FULL_LIST = _LIMITED_TO_FULL.tolist()


def limited_to_full(y: np.ndarray) -> np.ndarray:
    """Limited-range luma (16..235) -> full range (0..255) through the fixed integer table."""
    return _LIMITED_TO_FULL[np.asarray(y, dtype=np.uint8)]


class _Tally:
    """Edit-list-discarded packets seen: they count in the header but never decode."""

    __slots__ = ("discarded",)

    def __init__(self) -> None:
        self.discarded = 0


def _iter_frames(container, stream, tally: _Tally) -> Iterator:
    """Frames in decoder output order. Tests wrap this to count how many were decoded."""
    for packet in container.demux(stream):
        if packet.size and packet.is_discard:
            tally.discarded += 1
        yield from packet.decode()  # the final empty packet flushes delayed frames


def _upright(a: np.ndarray | None, rotation: int) -> np.ndarray | None:
    if a is None or rotation == 0:
        return a
    # np.rot90 turns counter-clockwise, the display matrix's sense.
    return np.ascontiguousarray(np.rot90(a, k=rotation // 90))


def _plane(plane) -> np.ndarray:
    """A view of one frame plane without its line padding (valid while the frame lives)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def _yuv_readable(frame) -> bool:
    fmt = frame.format
    if fmt is None or fmt.name not in YUV_FORMATS:
        return False
    planes = frame.planes
    return len(planes) >= 3 and all(0 < p.width <= p.line_size for p in planes[:3])


def _readable(frame, bytes_per_pixel: int) -> bool:
    p = frame.planes[0]
    return 0 < p.width * bytes_per_pixel <= p.line_size


def _convert(frame, index: int, pts: float) -> DecodedFrame:
    rotation = rotation_of(frame)
    name = frame.format.name if frame.format is not None else ""
    if name == "gray" and _readable(frame, 1):
        # swscale's gray -> rgb24 repeats the level in every channel, whose luma is the level.
        grey = np.array(_plane(frame.planes[0]))
        return DecodedFrame(index=index, pts=pts, grey=_upright(grey, rotation), rotation=rotation)
    if name in PACKED_RGB_FORMATS and _readable(frame, PACKED_RGB_FORMATS[name][0]):
        bpp, (r, g, b) = PACKED_RGB_FORMATS[name]
        p = frame.planes[0]
        packed = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width * bpp]
        packed = packed.reshape(p.height, p.width, bpp)
        rgb = np.empty((p.height, p.width, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = packed[..., r], packed[..., g], packed[..., b]
        rgb = _upright(rgb, rotation)
        return DecodedFrame(index=index, pts=pts, grey=to_grey(rgb), rgb=rgb, rotation=rotation)
    if _yuv_readable(frame):
        planes = frame.planes
        full = frame.format.name.startswith("yuvj") or int(frame.color_range or 0) == _AVCOL_RANGE_JPEG
        y = planes[0]
        if full:
            grey = np.array(_plane(y))
        else:
            # PIL applies the 256-entry table in C, about 3x faster than numpy indexing.
            img = Image.frombuffer("L", (y.width, y.height), y, "raw", "L", y.line_size, 1)
            grey = np.array(img.point(_LIMITED_TO_FULL_LIST))  # a writable copy, like the others
        u, v = np.array(_plane(planes[1])), np.array(_plane(planes[2]))
        return DecodedFrame(index=index, pts=pts, grey=_upright(grey, rotation), u=_upright(u, rotation),
                            v=_upright(v, rotation), full_range=full, rotation=rotation)
    rgb = _upright(frame.to_ndarray(format="rgb24"), rotation)
    return DecodedFrame(index=index, pts=pts, grey=to_grey(rgb), rgb=rgb, rotation=rotation)


def decode(path: str | os.PathLike[str], indices: Sequence[int]) -> list[DecodedFrame]:
    """Decode the frames at `indices` (positions in decoder output order, from 0).

    Decoding stops right after the last wanted index; only kept frames are
    converted (see the module doc). Frames come back upright (display rotation applied).

    If the clip ends early: a container that declared more frames than decode
    raises MediaError("truncated: ..."); otherwise (the count was an estimate)
    the frames found are returned, or MediaError when none of them was wanted.

    The decoder runs single-threaded. Builds run one process per core, so CPU time
    per frame is what counts: on the POCUS convex sample FFmpeg's AUTO threading
    spent ~20 % more of it (about 1,700 vs 2,100 frames per CPU-second, decode
    only, identical pixels), and frame threads decode ahead past the stop index.
    """
    wanted = frame_indices(indices)
    if not wanted:
        return []
    last = wanted[-1]
    want = set(wanted)

    container, stream = open_container(path)
    out: list[DecodedFrame] = []
    tally = _Tally()
    n = 0
    try:
        declared = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        stream.thread_type = "SLICE"
        stream.thread_count = 1

        def failure(exc: Exception) -> str:
            # A file cut short fails when the demuxer reads past its end: say so.
            present = present_entries(stream, Path(path).stat().st_size)
            if declared > 0 and present is not None and present < declared:
                return f"truncated: container declares {declared} frames, only {n} decode"
            return f"decode error at frame {n}: {ffmpeg_message(exc)}"

        with reading(path, failure, (av.error.FFmpegError,)):
            for frame in _iter_frames(container, stream, tally):
                if n in want:
                    t = frame.time
                    if t is None:
                        t = n / fps if fps > 0 else float(n)
                    out.append(_convert(frame, n, float(t)))
                    if out[-1].grey.shape != out[0].grey.shape:
                        (h0, w0), (h, w) = out[0].grey.shape, out[-1].grey.shape
                        raise MediaError(path, f"frame size changes at frame {n} ({w0}x{h0}, then {w}x{h})")
                n += 1
                if n > last:
                    break
    finally:
        container.close()

    if n > last:
        return out
    if n == 0:
        raise MediaError(path, "no decodable frames")
    # Packets an edit list discards are in the declared count but never decoded.
    if declared > 0 and n + tally.discarded < declared:
        raise MediaError(path, f"truncated: container declares {declared} frames, only {n} decode")
    if out:
        return out
    raise MediaError(path, f"only {n} frames decode, none of the wanted indices (first wanted {wanted[0]})")
