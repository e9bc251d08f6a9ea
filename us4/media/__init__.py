"""Media layer: one clip at a time.

probe (what a clip declares), sampling (which frames to keep), decode (those frames
and no more), crop (the scan region), pixels (grey, hashes, PNG), text (burned-in text: found with the
optional `us4[text]` engine, painted out), phantom (synthetic clips for tests and the
demo). Knows nothing of sources, recipes or releases.
"""
from __future__ import annotations

from .crop import Box, detect_scan_region, is_colour
from .decode import DecodedFrame, decode
from .phantom import PhantomLayout, phantom_layout, write_broken_files, write_phantom_clip
from .pixels import THUMB, dhash, encode_png, near_duplicate, pixel_sha256, thumbnail, to_grey
from .probe import VIDEO_SUFFIXES, ClipInfo, MediaError, probe
from .sampling import SamplingPolicy
from .text import TextBox, TextEngineMissing, detect_text, frames_to_check, mask_text, text_engine_versions

__all__ = [
    "Box", "ClipInfo", "DecodedFrame", "MediaError", "PhantomLayout", "SamplingPolicy", "TextBox",
    "TextEngineMissing", "THUMB", "VIDEO_SUFFIXES", "decode", "detect_scan_region", "detect_text", "dhash",
    "encode_png", "frames_to_check", "is_colour", "mask_text", "near_duplicate", "phantom_layout",
    "pixel_sha256", "probe", "text_engine_versions", "thumbnail", "to_grey", "write_broken_files",
    "write_phantom_clip",
]
