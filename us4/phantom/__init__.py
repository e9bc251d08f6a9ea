"""Phantom data for the demo and the tests: synthetic clips with a known scan region and
burned-in text (clips), DICOM files and image sequences written from their frames, with
planted identity (dicom), and raw folders in each source's real form (corpus: the embedded
default of `us4 demo`; it imports the builder for the phantom marker, so it is imported by
its own name). Nothing that handles real clips imports this package.
"""
from __future__ import annotations

from .clips import PhantomLayout, phantom_layout, write_broken_files, write_phantom_clip
from .dicom import PLANTED_IDENTITY, write_phantom_dicom, write_phantom_sequence

__all__ = ["PLANTED_IDENTITY", "PhantomLayout", "phantom_layout", "write_broken_files", "write_phantom_clip",
           "write_phantom_dicom", "write_phantom_sequence"]
