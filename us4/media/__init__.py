"""Media layer: one clip at a time.

clips (one entry point for videos, DICOM files and image sequences: find, probe,
decode), probe (what a video declares), dicom and imageseq (the other two input
kinds), sampling (which frames to keep), decode (those frames and no more), crop (the
scan region, scanner regions), pixels (grey, hashes, PNG), phantom and phantom_dicom
(synthetic clips for tests and the demo). Knows nothing of sources, recipes or releases.
"""
from __future__ import annotations

from .clips import INPUT_KINDS, ClipRef, FoundClip, NotAClip, decode_clip, find_clips, probe_clip
from .crop import Box, Region, detect_scan_region, is_colour, largest_tissue_region
from .decode import DecodedFrame, decode
from .dicom import DICOM_ALLOWED, DICOM_SUFFIXES, allowed_table, is_dicom_file
from .imageseq import IMAGE_SUFFIXES
from .phantom import PhantomLayout, phantom_layout, write_broken_files, write_phantom_clip
from .phantom_dicom import PLANTED_IDENTITY, write_phantom_dicom, write_phantom_sequence
from .pixels import dhash, encode_png, near_duplicate, pixel_sha256, to_grey
from .probe import VIDEO_SUFFIXES, ClipInfo, MediaError, probe
from .sampling import SamplingPolicy

__all__ = [
    "Box", "ClipInfo", "ClipRef", "DICOM_ALLOWED", "DICOM_SUFFIXES", "DecodedFrame", "FoundClip",
    "IMAGE_SUFFIXES", "INPUT_KINDS", "MediaError", "NotAClip", "PLANTED_IDENTITY", "PhantomLayout", "Region",
    "SamplingPolicy", "VIDEO_SUFFIXES", "allowed_table", "decode", "decode_clip", "detect_scan_region", "dhash",
    "encode_png", "find_clips", "is_colour", "is_dicom_file", "largest_tissue_region", "near_duplicate",
    "phantom_layout", "pixel_sha256", "probe", "probe_clip", "to_grey", "write_broken_files",
    "write_phantom_clip", "write_phantom_dicom", "write_phantom_sequence",
]
