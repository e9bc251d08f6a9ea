"""The media layer's shared vocabulary: a clip's problem (`MediaError`), what a clip declares
(`ClipInfo`), pixel boxes and scanner regions (`Box`, `Region`) and a decoded frame
(`DecodedFrame`). Every decoder speaks these; none imports another decoder for them."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .pixels import ycbcr_to_rgb

__all__ = ["Box", "ClipInfo", "DecodedFrame", "MediaError", "Region"]


class MediaError(Exception):
    """A clip cannot be read; `reason` is short and human, `path` names the clip."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Exceptions cross process boundaries in parallel builds; keep both fields.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class Box:
    """A pixel rectangle: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [int(self.x), int(self.y), int(self.w), int(self.h)]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Box":
        x, y, w, h = (int(v) for v in values)
        return cls(x, y, w, h)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """The box's pixels of an H x W (x C) array, as a view."""
        return arr[self.y: self.y + self.h, self.x: self.x + self.w]

    @property
    def area(self) -> int:
        return int(self.w) * int(self.h)


@dataclass(frozen=True)
class Region:
    """One scanner region of a frame, as a DICOM Sequence of Ultrasound Regions item states it.

    `box` is the region inside the frame (RegionLocationMinX0/MinY0/MaxX1/MaxY1 are
    inclusive; a region that is inverted or reaches beyond the frame is left out).
    `spatial_format` (RegionSpatialFormat): 1 2D, 2 M-mode, 3 spectral, 4 waveform,
    5 graphics, 0 none; `data_type` (RegionDataType): 1 tissue, 2 colour flow, 3 PW Doppler,
    ... `units` and `delta` are PhysicalUnitsX/YDirection and PhysicalDeltaX/Y as stored;
    `spacing_mm` is (x, y) millimetres per pixel where both units are cm (3), else None.
    Nothing here identifies anyone.
    """

    box: Box
    spatial_format: int | None
    data_type: int | None
    units: tuple[int | None, int | None]
    delta: tuple[float | None, float | None]
    spacing_mm: tuple[float, float] | None


@dataclass(frozen=True)
class ClipInfo:
    """What a clip declares about itself, for every input kind.

    `width`/`height` are the upright size (after `rotation`), i.e. the size of the
    frames `decode` returns. `rotation` is the counter-clockwise angle (0, 90, 180,
    270) that turns a stored frame upright, FFmpeg's display-matrix convention.

    `kind` is "video", "dicom" or "image_sequence". For DICOM, `container` is
    "dicom" and `codec` the transfer syntax's short name ("rle", "jpeg-baseline", ...),
    `transfer_syntax` its UID; for image sequences "image_sequence" and the image
    format ("png"). `pix_fmt` is FFmpeg's pixel format for video, the photometric
    interpretation and bits stored for DICOM ("palette_color-8"), and Pillow's mode of the
    first frame for image sequences ("L"). `photometric`/`bits` are the stored photometric interpretation and
    bits per sample where known (None for video). `timing` says where `fps` came from:
    "container" (video), "frame_time", "frame_time_vector", "cine_rate",
    "recommended_display_frame_rate", "recipe", or "none" (a single frame without a
    rate: fps 0). `regions` are the scanner regions a DICOM file declares (those inside the
    frame) and `spacing_mm` (x, y) the mm per pixel of the largest 2D one, when it is in cm;
    `region_problems` says which declared regions were left out and why (numbers only).
    `burned_in` is DICOM's Burned In Annotation (None when absent). `attributes` holds
    only allow-listed DICOM values (`us4.media.dicom.DICOM_ALLOWED`), JSON-ready.

    `path` names the clip on this machine and may itself identify a patient: use it in
    local messages only, never write it to a release. Every other field is free of
    identifying values by construction.
    """

    path: str
    container: str
    codec: str
    fps: float
    n_frames: int
    duration: float
    width: int
    height: int
    rotation: int
    pix_fmt: str
    frames_counted: bool
    kind: str = "video"
    transfer_syntax: str | None = None
    photometric: str | None = None
    bits: int | None = None
    spacing_mm: tuple[float, float] | None = None
    regions: tuple[Region, ...] = ()
    burned_in: bool | None = None
    timing: str = "container"
    attributes: dict = field(default_factory=dict)
    region_problems: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One decoded frame, upright (display rotation applied).

    `grey` (H x W uint8, full range) is always there. Planar YUV sources also keep
    their chroma planes `u` and `v` as stored (subsampled, uint8), with
    `full_range` telling the chroma's range; 8-bit grey sources keep nothing else;
    other sources keep `rgb` (H x W x 3) and `grey` is its integer BT.601 luma.
    `rotation` is the counter-clockwise angle that was applied.
    """

    index: int
    pts: float
    grey: np.ndarray
    u: np.ndarray | None = None
    v: np.ndarray | None = None
    rgb: np.ndarray | None = None
    full_range: bool = True
    rotation: int = 0

    def chroma_factors(self) -> tuple[int, int]:
        """(x, y) subsampling factors of `u`/`v` relative to `grey`, in upright orientation."""
        if self.u is None:
            return 1, 1
        return _factor(self.grey.shape[1], self.u.shape[1]), _factor(self.grey.shape[0], self.u.shape[0])

    def to_rgb(self) -> np.ndarray:
        """H x W x 3 uint8 RGB: `rgb` when stored, else BT.601 from grey and chroma in integers.

        Chroma is upsampled by repetition (in the stored orientation, so odd sizes
        line up after any rotation). Only colour clips need this; it is exact
        integer arithmetic, so it gives the same bytes on every machine.
        """
        if self.rgb is not None:
            return self.rgb
        if self.u is None or self.v is None:
            return np.repeat(self.grey[..., None], 3, axis=2)
        k = self.rotation // 90 % 4
        (h, w), (ch, cw) = self.grey.shape, self.u.shape
        if k % 2:  # back to the stored orientation
            h, w, ch, cw = w, h, cw, ch
        fx, fy = _factor(w, cw), _factor(h, ch)

        def up(c: np.ndarray) -> np.ndarray:
            c = np.rot90(c, -k) if k else c
            c = np.repeat(np.repeat(c, fy, axis=0), fx, axis=1)[:h, :w]
            return np.rot90(c, k) if k else c

        return ycbcr_to_rgb(self.grey, up(self.u), up(self.v), self.full_range)


def _factor(full: int, sub: int) -> int:
    """The subsampling factor s with ceil(full / s) == sub (1, 2 or 4)."""
    for s in (1, 2, 4):
        if -(-full // s) == sub:
            return s
    return max(1, round(full / max(1, sub)))
