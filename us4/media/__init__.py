"""Media layer: one clip at a time.

probe (what a clip declares), sampling (which frames to keep), decode (those frames
and no more), crop (the scan region), pixels (grey, hashes, PNG), phantom (synthetic
clips for tests and the demo). Knows nothing of sources, recipes or releases.
"""
from __future__ import annotations

from .crop import Box, detect_scan_region, is_colour
from .decode import DecodedFrame, decode
from .phantom import PhantomLayout, phantom_layout, write_broken_files, write_phantom_clip
from .pixels import THUMB, dhash, encode_png, near_duplicate, pixel_sha256, thumbnail, to_grey
from .probe import VIDEO_SUFFIXES, ClipInfo, MediaError, probe
from .sampling import SamplingPolicy

__all__ = [
    "Box", "ClipInfo", "DecodedFrame", "MediaError", "PhantomLayout", "SamplingPolicy",
    "VIDEO_SUFFIXES", "decode", "detect_scan_region", "dhash", "encode_png", "is_colour",
    "near_duplicate", "phantom_layout", "pixel_sha256", "probe", "THUMB", "thumbnail", "to_grey",
    "write_broken_files", "write_phantom_clip",
]
