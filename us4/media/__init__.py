"""Media layer: one clip at a time.

types (what every part speaks: MediaError, ClipInfo, Box, Region, DecodedFrame), gate (the
one place that tells a clip's problem from ours, and the checks at every decoder's door),
clips (one entry point for videos, DICOM files and image sequences: find, probe,
decode), probe (what a video declares), dicom and imageseq (the other two input
kinds), sampling (which frames to keep), decode (those frames and no more), crop (the
scan region, scanner regions), pixels (grey, hashes, thumbnails, PNG), neardup (close
hashes confirmed on thumbnails), text (burned-in text: found with the optional `us4[text]`
engine, painted out). Knows nothing of sources, recipes or releases; the synthetic clips
of the tests and the demo are `us4.phantom`.
"""
from __future__ import annotations

from .clips import (INPUT_KINDS, ClipRef, FoundClip, ListedClip, NotAClip, decode_clip, find_clips, list_clips,
                    probe_clip)
from .crop import detect_scan_region, is_colour, largest_tissue_region, tissue_regions
from .decode import decode
from .imageseq import IMAGE_SUFFIXES
from .pixels import THUMB, dhash, encode_png, near_duplicate, pixel_sha256, thumbnail, to_grey
from .probe import VIDEO_SUFFIXES, probe
from .sampling import SamplingPolicy
from .text import TextBox, TextEngineMissing, detect_text, frames_to_check, mask_text, text_engine_versions
from .types import Box, ClipInfo, DecodedFrame, MediaError, Region

__all__ = [
    "Box", "ClipInfo", "ClipRef", "DICOM_ALLOWED", "DICOM_SUFFIXES", "DecodedFrame", "FoundClip", "IMAGE_SUFFIXES",
    "INPUT_KINDS", "ListedClip", "MediaError", "NotAClip", "Region", "SamplingPolicy", "THUMB", "TextBox",
    "TextEngineMissing", "VIDEO_SUFFIXES", "allowed_table", "decode", "decode_clip", "detect_scan_region",
    "detect_text", "dhash", "encode_png", "find_clips", "frames_to_check", "is_colour", "is_dicom_file",
    "largest_tissue_region", "list_clips", "mask_text", "near_duplicate", "pixel_sha256", "probe", "probe_clip",
    "text_engine_versions", "thumbnail", "tissue_regions", "to_grey",
]

_DICOM = frozenset({"DICOM_ALLOWED", "DICOM_SUFFIXES", "allowed_table", "is_dicom_file"})


def __getattr__(name: str):
    # pydicom takes 0.15 s to import (requests included): only what reads DICOM pays for it
    if name in _DICOM:
        from . import dicom

        return getattr(dicom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
