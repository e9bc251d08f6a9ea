"""DICOM ultrasound clips: what a file declares, and the pixels of the wanted frames.

A clip is one multi-frame file (a cine loop), one single-frame file, or the
single-frame files of one series (ordered by the caller; see `find_dicom`). Headers
are read with pydicom up to the pixel data and no further (a deflated file, being one
zlib stream, is inflated whole, still without decoding pixels); the pixel data element is
then checked by walking its item headers (never its bytes) against Rows, Columns and
Number of Frames, so a truncated stream or a wrong frame count is a clear error before
anything is decoded. Decoding goes frame by frame through pydicom's decoder with one
plugin pinned per transfer syntax (`SYNTAXES`), so the same file gives the same pixels
whichever other plugins are installed, and only the wanted frames are decoded.

Pixels, always uint8, by integer rules:
- MONOCHROME2 with 8 bits stored in 8: as stored. Deeper (or shallower) grey: through
  the first VOI window (Window Center/Width, after Rescale Slope/Intercept; LINEAR or
  LINEAR_EXACT, other functions read as LINEAR) when there is one, else the Bits
  Stored range (`pixels.range_to_8bit`): exact thresholds, no floating point.
  MONOCHROME1 is inverted afterwards (255 - v). Grey frames carry `grey` only.
- RGB: as stored (deeper samples by the Bits Stored range). YBR_FULL / YBR_FULL_422:
  integer BT.601 full range (`pixels.ycbcr_to_rgb`); 4:2:2 chroma is upsampled by the
  decoder (pydicom repeats it for native data, libjpeg interpolates for JPEG). YBR_RCT /
  YBR_ICT: the JPEG 2000 decoder returns RGB. PALETTE COLOR: the palette applied to
  every possible index once; 16-bit entries keep their high byte (a palette declared
  16-bit whose entries all fit in 8 bits is read as 8-bit, a common writer slip).
  Colour frames carry `rgb` and `grey = to_grey(rgb)`, as decode.py does for RGB video.

De-identification starts here: `ClipInfo.attributes` holds only the attributes of
`DICOM_ALLOWED`, and only values that cannot carry free text (numbers, standard UIDs,
defined terms). Error reasons never quote a header value; they name standard UIDs by
their standard names only.
"""
from __future__ import annotations

import math
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, as_pixel_options, get_decoder
from pydicom.uid import UID

from .crop import Box, Region, largest_tissue_region
from .decode import DecodedFrame
from .pixels import range_to_8bit, thresholds_to_8bit, to_grey, ycbcr_to_rgb
from .probe import ClipInfo, MediaError, check_frame_size, environment_error
from .walk import natural_key, rel_posix, walk_files

__all__ = ["DICOM_ALLOWED", "DICOM_SUFFIXES", "SYNTAXES", "AllowedAttribute", "Syntax", "allowed_table",
           "decode_dicom", "find_dicom", "is_dicom_file", "probe_dicom", "syntax_name"]

#: Suffixes that mark a file as DICOM without looking inside (the DICM preamble also does).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


class Syntax(NamedTuple):
    """A transfer syntax us4 reads: its short name (ClipInfo.codec), the pydicom decoding
    plugin pinned for it ("" for native data) and the package whose code decodes it."""

    short: str
    plugin: str
    package: str


#: Transfer syntaxes read here, each tested on files written by `phantom_dicom`. Lossy
#: JPEG decoders differ in their last bits, hence one pinned plugin per syntax.
SYNTAXES: dict[str, Syntax] = {
    "1.2.840.10008.1.2": Syntax("raw-implicit-le", "", "pydicom"),
    "1.2.840.10008.1.2.1": Syntax("raw-explicit-le", "", "pydicom"),
    "1.2.840.10008.1.2.2": Syntax("raw-explicit-be", "", "pydicom"),
    "1.2.840.10008.1.2.1.99": Syntax("raw-deflated", "", "pydicom"),
    "1.2.840.10008.1.2.5": Syntax("rle", "pydicom", "pydicom"),
    "1.2.840.10008.1.2.4.50": Syntax("jpeg-baseline", "pillow", "pillow (libjpeg-turbo)"),
    "1.2.840.10008.1.2.4.51": Syntax("jpeg-extended", "pillow", "pillow (libjpeg-turbo)"),
    "1.2.840.10008.1.2.4.80": Syntax("jpeg-ls", "pylibjpeg", "pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.81": Syntax("jpeg-ls-near", "pylibjpeg", "pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.90": Syntax("jpeg2000-lossless", "pylibjpeg", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.91": Syntax("jpeg2000", "pylibjpeg", "pylibjpeg-openjpeg"),
}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")  # PS3.5 9.1 (and 64 characters at most)
_JPEG_8BIT_ONLY = {"1.2.840.10008.1.2.4.51"}  # Pillow decodes 8-bit JPEG Extended only
_RLE = "1.2.840.10008.1.2.5"

#: SOP classes that are ultrasound images (files of any class with Modality US count too).
US_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
}
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

_GREY = ("MONOCHROME1", "MONOCHROME2")
_PHOTOMETRIC = {  # supported interpretation -> samples per pixel
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3,
    "YBR_FULL": 3, "YBR_FULL_422": 3, "YBR_RCT": 3, "YBR_ICT": 3,
}
#: Defined terms of Photometric Interpretation (PS3.3 C.7.6.3.1.2): the only values quoted back.
_PHOTOMETRIC_TERMS = frozenset(_PHOTOMETRIC) | {"HSV", "ARGB", "CMYK", "YBR_PARTIAL_422", "YBR_PARTIAL_420",
                                                "XYZ"}
#: Defined terms of Modality (PS3.3 C.7.3.1.1.1), current and retired, for attributes and messages.
_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS "
    "MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG RTDOSE RTIMAGE "
    "RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC CD DD DF DM DS EC FA FS "
    "LP MA MS OPR ST VF".split())


class AllowedAttribute(NamedTuple):
    """One DICOM attribute that may leave the media layer (and reach a release)."""

    tag: str
    keyword: str
    group: str
    values: str


#: The allow-list: everything else (names, IDs, dates, times, UIDs of instances,
#: institution, station, operator, device serials, manufacturer and model, free text,
#: private tags) is never read into `ClipInfo`. "standard UID" values are kept only when
#: the UID is one the DICOM standard defines; "defined term" values only when they are
#: one of the standard's terms; numbers only when finite. Print it with `allowed_table()`.
DICOM_ALLOWED: tuple[AllowedAttribute, ...] = (
    AllowedAttribute("(0002,0010)", "TransferSyntaxUID", "encoding", "standard UID"),
    AllowedAttribute("(0008,0016)", "SOPClassUID", "object", "standard UID"),
    AllowedAttribute("(0008,0060)", "Modality", "object", "defined term"),
    AllowedAttribute("(0028,0010)", "Rows", "geometry", "number"),
    AllowedAttribute("(0028,0011)", "Columns", "geometry", "number"),
    AllowedAttribute("(0028,0008)", "NumberOfFrames", "geometry", "number"),
    AllowedAttribute("(0028,0034)", "PixelAspectRatio", "geometry", "numbers"),
    AllowedAttribute("(0028,0002)", "SamplesPerPixel", "photometric", "number"),
    AllowedAttribute("(0028,0004)", "PhotometricInterpretation", "photometric", "defined term"),
    AllowedAttribute("(0028,0006)", "PlanarConfiguration", "photometric", "number"),
    AllowedAttribute("(0028,0100)", "BitsAllocated", "photometric", "number"),
    AllowedAttribute("(0028,0101)", "BitsStored", "photometric", "number"),
    AllowedAttribute("(0028,0102)", "HighBit", "photometric", "number"),
    AllowedAttribute("(0028,0103)", "PixelRepresentation", "photometric", "number"),
    AllowedAttribute("(0028,1050)", "WindowCenter", "photometric", "numbers"),
    AllowedAttribute("(0028,1051)", "WindowWidth", "photometric", "numbers"),
    AllowedAttribute("(0028,1056)", "VOILUTFunction", "photometric", "defined term"),
    AllowedAttribute("(0028,1052)", "RescaleIntercept", "photometric", "number"),
    AllowedAttribute("(0028,1053)", "RescaleSlope", "photometric", "number"),
    AllowedAttribute("(0028,2110)", "LossyImageCompression", "photometric", "defined term"),
    AllowedAttribute("(0028,2112)", "LossyImageCompressionRatio", "photometric", "numbers"),
    AllowedAttribute("(0018,1063)", "FrameTime", "timing", "number (ms)"),
    AllowedAttribute("(0018,1065)", "FrameTimeVector", "timing", "numbers (ms)"),
    AllowedAttribute("(0018,0040)", "CineRate", "timing", "number (frames/s)"),
    AllowedAttribute("(0008,2144)", "RecommendedDisplayFrameRate", "timing", "number (frames/s)"),
    AllowedAttribute("(0028,0301)", "BurnedInAnnotation", "annotation", "defined term"),
    AllowedAttribute("(0018,6011)", "SequenceOfUltrasoundRegions", "ultrasound regions",
                     "items holding only the region attributes below"),
    AllowedAttribute("(0018,6012)", "RegionSpatialFormat", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6014)", "RegionDataType", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6016)", "RegionFlags", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6018)", "RegionLocationMinX0", "ultrasound regions", "number"),
    AllowedAttribute("(0018,601A)", "RegionLocationMinY0", "ultrasound regions", "number"),
    AllowedAttribute("(0018,601C)", "RegionLocationMaxX1", "ultrasound regions", "number"),
    AllowedAttribute("(0018,601E)", "RegionLocationMaxY1", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6020)", "ReferencePixelX0", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6022)", "ReferencePixelY0", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6024)", "PhysicalUnitsXDirection", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6026)", "PhysicalUnitsYDirection", "ultrasound regions", "number"),
    AllowedAttribute("(0018,6028)", "ReferencePixelPhysicalValueX", "ultrasound regions", "number"),
    AllowedAttribute("(0018,602A)", "ReferencePixelPhysicalValueY", "ultrasound regions", "number"),
    AllowedAttribute("(0018,602C)", "PhysicalDeltaX", "ultrasound regions", "number"),
    AllowedAttribute("(0018,602E)", "PhysicalDeltaY", "ultrasound regions", "number"),
)
_REGIONS = "SequenceOfUltrasoundRegions"
_REGION_KEYWORDS = tuple(a.keyword for a in DICOM_ALLOWED if a.group == "ultrasound regions" and a.keyword != _REGIONS)
_TOP_KEYWORDS = tuple(a.keyword for a in DICOM_ALLOWED if a.group != "ultrasound regions")
_DEFINED_TERMS = {
    "PhotometricInterpretation": _PHOTOMETRIC_TERMS,
    "Modality": _MODALITIES,
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "BurnedInAnnotation": frozenset({"YES", "NO"}),
    "LossyImageCompression": frozenset({"00", "01"}),
}


def allowed_table() -> str:
    """The allow-list as a Markdown table (for the dataset card)."""
    lines = ["| tag | attribute | group | kept values |", "|---|---|---|---|"]
    lines += [f"| {a.tag} | {a.keyword} | {a.group} | {a.values} |" for a in DICOM_ALLOWED]
    return "\n".join(lines)


# --- reading a header --------------------------------------------------------

@dataclass(frozen=True)
class _Pixels:
    """Where the Pixel Data value starts, its length (None: encapsulated) and its VR."""

    offset: int
    length: int | None
    vr: str | None


@dataclass(frozen=True)
class _Header:
    path: Path
    ds: Dataset                 # everything before the pixel data (all of it for deflated files)
    syntax: str
    pixels: _Pixels | None


def _standard_name(uid: object) -> str | None:
    """The standard's name of a UID, or None for a UID the standard does not define."""
    u = UID(str(uid or ""))
    name = u.name
    return name if name and name != str(u) else None


def syntax_name(uid: str) -> str:
    """The standard's name of a transfer syntax UID (the UID itself when the standard has none)."""
    return _standard_name(uid) or str(uid)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a file with a DICOM suffix (.dcm, .dicom) or the DICM preamble marker."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    return _has_marker(p)


def _has_marker(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read_header(path: str | os.PathLike[str]) -> _Header:
    """The dataset up to the pixel data, and where the pixel data lies. MediaError when not DICOM."""
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "no such file")
    if not p.is_file():
        raise MediaError(path, "not a file")
    if p.stat().st_size == 0:
        raise MediaError(path, "empty file")
    marker = _has_marker(p)
    if not marker and p.suffix.lower() not in DICOM_SUFFIXES | {""}:
        raise MediaError(path, f"not DICOM (no DICM marker; suffix {p.suffix.lower()!r})")
    with p.open("rb") as f:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=not marker)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on garbage
            if environment_error(exc):
                raise
            # The exception's text may quote header bytes: name its type only.
            raise MediaError(path, f"not DICOM (the header cannot be parsed: {type(exc).__name__})") from exc
        implicit, little = ds.original_encoding
        meta_syntax = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
        if not marker and "SOPClassUID" not in ds and "Rows" not in ds:
            raise MediaError(path, "not DICOM (no DICM marker and no DICOM image header)")
        if meta_syntax:
            syntax = str(meta_syntax)
        else:  # no file meta: the encoding pydicom found
            syntax = "1.2.840.10008.1.2" if implicit is not False else (
                "1.2.840.10008.1.2.1" if little is not False else "1.2.840.10008.1.2.2")
        if syntax == _DEFLATED:
            return _read_deflated(p)
        if _standard_name(syntax) is None:  # its encoding is unknown: the pixel data cannot be found
            return _Header(p, ds, syntax, None)
        pixels = _pixel_element(f, implicit is not False, little is not False, path)
    return _Header(p, ds, syntax, pixels)


def _read_deflated(p: Path) -> _Header:
    # The dataset is one zlib stream: no offsets into the file exist, so read it whole.
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # noqa: BLE001
        if environment_error(exc):
            raise
        raise MediaError(p, f"cannot inflate the deflated dataset ({type(exc).__name__})") from exc
    pixels = _Pixels(0, len(ds.PixelData), None) if "PixelData" in ds else None
    return _Header(p, ds, _DEFLATED, pixels)


def _pixel_element(f, implicit: bool, little: bool, path) -> _Pixels | None:
    """Parse the pixel data element header at the file position (pydicom stops right before it)."""
    start = f.tell()
    head = f.read(8)
    if len(head) < 8:
        return None
    e = "<" if little else ">"
    group, elem = struct.unpack(e + "HH", head[:4])
    if group == 0x7FE0 and elem in (0x0008, 0x0009):
        raise MediaError(path, "float pixel data (not an ultrasound image format us4 reads)")
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if implicit:
        (length,) = struct.unpack(e + "L", head[4:])
        return _Pixels(start + 8, None if length == 0xFFFFFFFF else length, None)
    vr = head[4:6].decode("ascii", "replace")
    if vr in ("OB", "OW", "UN", "OV", "OL", "OF", "OD"):
        more = f.read(4)
        if len(more) < 4:
            raise MediaError(path, "truncated pixel data (the file ends inside its element header)")
        (length,) = struct.unpack(e + "L", more)
        return _Pixels(start + 12, None if length == 0xFFFFFFFF else length, vr)
    (length,) = struct.unpack(e + "H", head[6:])
    return _Pixels(start + 8, length, vr)


def _sop_class(h: _Header) -> str:
    sop = h.ds.get("SOPClassUID")
    if not sop and getattr(h.ds, "file_meta", None) is not None:
        sop = h.ds.file_meta.get("MediaStorageSOPClassUID")
    return str(sop or "")


def _describe_class(h: _Header) -> str:
    return _standard_name(_sop_class(h)) or "a non-standard SOP class"


def _not_a_clip(h: _Header) -> str | None:
    """Why a readable DICOM file is no ultrasound image at all, or None when it is one."""
    sop = _sop_class(h)
    modality = str(h.ds.get("Modality", "") or "")
    is_us = sop in US_SOP_CLASSES or modality == "US"
    if sop == _MEDIA_DIRECTORY or "DirectoryRecordSequence" in h.ds:
        return "not an image: a DICOMDIR (media index)"
    if h.pixels is None and _standard_name(h.syntax) is not None:  # else the syntax is what `_image` reports
        if is_us:
            return "DICOM without pixel data"
        return f"not an image: {_describe_class(h)} without pixel data"
    if not is_us:
        shown = modality if modality in _MODALITIES else "not US"
        return f"not an ultrasound image ({_describe_class(h)}, modality {shown})"
    return None


# --- facts of a header --------------------------------------------------------

def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _positive(value) -> float | None:
    v = _float(value)
    return v if v is not None and v > 0 else None


def _first(value):
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


@dataclass(frozen=True)
class _Image:
    """A validated header: what decoding needs."""

    header: _Header
    frames: int
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool


def _image(h: _Header) -> _Image:
    """Check that `h` is an ultrasound image us4 can decode; MediaError naming the cause if not."""
    path, ds = h.path, h.ds
    reason = _not_a_clip(h)
    if reason:
        raise MediaError(path, reason)
    syntax = SYNTAXES.get(h.syntax)
    if syntax is None:
        raise MediaError(path, _unsupported_syntax(h.syntax))
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if pi not in _PHOTOMETRIC:
        shown = pi if pi in _PHOTOMETRIC_TERMS else "not a DICOM defined term" if pi else "missing"
        raise MediaError(path, f"unsupported photometric interpretation ({shown}); us4 reads "
                               + ", ".join(sorted(_PHOTOMETRIC)))
    rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if not rows or not columns or rows < 0 or columns < 0:
        raise MediaError(path, "no image size (Rows or Columns missing or zero)")
    samples = _int(ds.get("SamplesPerPixel")) or 1
    if samples != _PHOTOMETRIC[pi]:
        raise MediaError(path, f"{pi} needs {_PHOTOMETRIC[pi]} samples per pixel, the file has {samples}")
    alloc, stored = _int(ds.get("BitsAllocated")), _int(ds.get("BitsStored"))
    stored = stored or alloc
    if alloc not in (8, 16) or not stored or not 1 <= stored <= alloc:
        raise MediaError(path, f"unsupported bit depth (Bits Allocated {alloc}, Bits Stored {stored}); "
                               "us4 reads 8 and 16 bits allocated")
    if pi.startswith("YBR") and pi not in ("YBR_RCT", "YBR_ICT") and alloc != 8:
        raise MediaError(path, f"unsupported {alloc}-bit {pi} (8-bit only)")
    if h.syntax in _JPEG_8BIT_ONLY and stored > 8:
        raise MediaError(path, f"unsupported {stored}-bit JPEG Extended (us4 reads its 8-bit form only)")
    raw_frames = ds.get("NumberOfFrames", 1)
    frames = _int(raw_frames if raw_frames not in (None, "") else 1)
    if frames is None or frames < 1:
        raise MediaError(path, "invalid Number of Frames (not a positive whole number)")
    image = _Image(h, frames, rows, columns, samples, pi, alloc, stored, _int(ds.get("PixelRepresentation")) == 1)
    _check_pixel_data(image)
    return image


def _unsupported_syntax(uid: str) -> str:
    name = _standard_name(uid)
    if name is None:  # a UID (digits and dots) cannot spell a name; other text is never quoted
        shown = uid if len(uid) <= 64 and _UID.match(uid) else "(a malformed UID, not quoted)"
        return f"unknown transfer syntax {shown}: not one the DICOM standard defines, so its pixels cannot be read"
    try:
        decoder = get_decoder(UID(uid))
    except (NotImplementedError, ValueError):
        return f"unsupported transfer syntax {name}: no pydicom decoder exists for it"
    installed = list(decoder.available_plugins)
    if installed:
        return (f"unsupported transfer syntax {name}: not verified by us4 "
                f"(installed plugin {', '.join(installed)} may decode it)")
    needs = "; ".join(decoder.missing_dependencies) or "a pydicom decoding plugin"
    return f"unsupported transfer syntax {name}: no decoder installed (would need {needs})"


def _frame_bytes(image: _Image) -> int:
    """Bytes of one natively encoded frame (YBR_FULL_422 stores two luma per chroma pair)."""
    pixels = image.rows * image.columns
    if image.photometric == "YBR_FULL_422":
        return pixels * 2 * image.bits_allocated // 8
    return pixels * image.samples * image.bits_allocated // 8


def _check_pixel_data(image: _Image) -> None:
    """The pixel data element against Number of Frames and the file size, reading headers only."""
    h, path = image.header, image.header.path
    px = h.pixels
    assert px is not None  # _not_a_clip ruled it out
    n = image.frames
    encapsulated = bool(SYNTAXES[h.syntax].plugin)
    if encapsulated != (px.length is None):
        raise MediaError(path, f"pixel data {'not ' if encapsulated else ''}encapsulated, against its "
                               f"transfer syntax ({SYNTAXES[h.syntax].short})")
    if px.length is not None:
        frame = _frame_bytes(image)
        expected = frame * n
        available = px.length if h.syntax == _DEFLATED else min(px.length, h.path.stat().st_size - px.offset)
        if available < px.length:
            raise MediaError(path, f"truncated pixel data: the file ends {available} bytes into "
                                   f"a {px.length}-byte pixel stream")
        if px.length < expected:
            if px.length % frame == 0:
                raise MediaError(path, f"Number of Frames says {n}, the pixel data holds only "
                                       f"{px.length // frame}")
            raise MediaError(path, f"truncated pixel data: {px.length} bytes, {n} frames of "
                                   f"{image.columns}x{image.rows} need {expected}")
        if px.length >= expected + frame:
            raise MediaError(path, f"Number of Frames says {n}, the pixel data holds {px.length // frame}")
        return
    items = _items(h)
    if not items:
        raise MediaError(path, "encapsulated pixel data without an offset table item")
    offsets = items[0][1] // 4
    fragments = len(items) - 1
    if fragments == 0:
        raise MediaError(path, "encapsulated pixel data holds no frame")
    extended = h.ds.get("ExtendedOffsetTable")
    if extended is not None and len(extended) // 8 != n:
        raise MediaError(path, f"Number of Frames says {n}, the extended offset table lists {len(extended) // 8}")
    if offsets and offsets != n:
        raise MediaError(path, f"Number of Frames says {n}, the offset table lists {offsets}")
    if fragments < n:
        raise MediaError(path, f"Number of Frames says {n}, the pixel data holds only {fragments} fragments")
    if h.syntax == _RLE and fragments != n:
        # RLE puts each frame in exactly one fragment (PS3.5 A.4.2).
        raise MediaError(path, f"Number of Frames says {n}, the RLE pixel data holds {fragments} frames")


def _items(h: _Header) -> list[tuple[int, int]]:
    """(offset, length) of each item of encapsulated pixel data, offset table first, from item headers only."""
    path, px = h.path, h.pixels
    size = path.stat().st_size
    e = "<"  # encapsulated pixel data is always little endian
    out = []
    pos = px.offset
    with path.open("rb") as f:
        while True:
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8:
                raise MediaError(path, f"truncated pixel data: the file ends after {max(0, len(out) - 1)} "
                                       "fragments, before the end of the pixel data")
            group, elem, length = struct.unpack(e + "HHL", head)
            if (group, elem) == (0xFFFE, 0xE0DD):
                return out
            if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                raise MediaError(path, "corrupt encapsulated pixel data (an item tag was expected)")
            if pos + 8 + length > size:
                raise MediaError(path, f"truncated pixel data: the file ends inside fragment {len(out)}")
            out.append((pos + 8, length))
            pos += 8 + length


# --- timing, regions, attributes ----------------------------------------------

def _timing(ds: Dataset, n: int, recipe_fps: float | None, series: bool, path) -> tuple[str, float, list[float]]:
    """(where the rate came from, fps, pts of every frame in seconds). Invalid values (zero,
    negative, unreadable, a vector of the wrong length) count as absent."""
    ft = _positive(ds.get("FrameTime"))
    if ft is not None:
        return "frame_time", 1000.0 / ft, [i * ft / 1000.0 for i in range(n)]
    if not series and n > 1:
        vector = ds.get("FrameTimeVector")
        values = [_float(v) for v in (vector if isinstance(vector, (list, tuple, MultiValue))
                                      else [vector])] if vector is not None else []
        if len(values) == n and all(v is not None and v >= 0 for v in values) and sum(values[1:]) > 0:
            # The first entry is the time before the first frame: 0 by definition (PS3.3 C.7.6.5.1.2).
            pts, t = [0.0], 0.0
            for v in values[1:]:
                t += v
                pts.append(t / 1000.0)
            return "frame_time_vector", (n - 1) / pts[-1], pts
    for keyword, name in (("CineRate", "cine_rate"), ("RecommendedDisplayFrameRate", "recommended_display_frame_rate")):
        rate = _positive(ds.get(keyword))
        if rate is not None:
            return name, rate, [i / rate for i in range(n)]
    if recipe_fps:
        return "recipe", float(recipe_fps), [i / recipe_fps for i in range(n)]
    if n == 1:
        return "none", 0.0, [0.0]
    raise MediaError(path, "no frame timing in the file and none in the recipe")


def _regions(ds: Dataset, rows: int, columns: int) -> tuple[tuple[Region, ...], tuple[str, ...]]:
    """The Sequence of Ultrasound Regions that lie inside the frame, and why each other one was
    left out: inverted (a Max before its Min) or reaching beyond Columns x Rows, its box is not
    where the scanner drew (numbers only in the reasons). Items without a location are left out."""
    out, problems = [], []
    for n, item in enumerate(ds.get(_REGIONS, None) or [], 1):
        x0, y0 = _int(item.get("RegionLocationMinX0")), _int(item.get("RegionLocationMinY0"))
        x1, y1 = _int(item.get("RegionLocationMaxX1")), _int(item.get("RegionLocationMaxY1"))
        if None in (x0, y0, x1, y1):
            continue
        where = f"ultrasound region {n} (x {x0}..{x1}, y {y0}..{y1})"
        if x1 < x0 or y1 < y0:
            problems.append(f"{where} is inverted (a Max before its Min): left out, not used as the crop")
            continue
        if x0 < 0 or y0 < 0 or x1 >= columns or y1 >= rows:
            problems.append(f"{where} reaches beyond the {columns}x{rows} frame: left out, not used as the crop")
            continue
        units = (_int(item.get("PhysicalUnitsXDirection")), _int(item.get("PhysicalUnitsYDirection")))
        delta = (_float(item.get("PhysicalDeltaX")), _float(item.get("PhysicalDeltaY")))
        spacing = None
        if units == (3, 3) and delta[0] and delta[1]:  # 3 = cm
            spacing = (abs(delta[0]) * 10.0, abs(delta[1]) * 10.0)
        out.append(Region(box=Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                          spatial_format=_int(item.get("RegionSpatialFormat")),
                          data_type=_int(item.get("RegionDataType")), units=units, delta=delta, spacing_mm=spacing))
    return tuple(out), tuple(problems)


def _json_value(keyword: str, elem) -> object | None:
    """A JSON-ready value of an allow-listed element, or None when it is not a safe value."""
    value = elem.value
    if elem.VR == "UI":
        return str(value) if _standard_name(value) else None
    if elem.VR == "CS":
        text = str(_first(value) or "").strip()
        return text if text in _DEFINED_TERMS.get(keyword, ()) else None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    nums = []
    for v in values:
        f = _float(v)
        if f is None:
            return None
        nums.append(int(f) if elem.VR in ("IS", "US", "UL", "SS", "SL") else f)
    if not nums:
        return None
    return nums if len(nums) > 1 or keyword in ("FrameTimeVector", "PixelAspectRatio") else nums[0]


def _attributes(h: _Header) -> dict:
    """The allow-listed attributes of `h` (see DICOM_ALLOWED), JSON-ready, keys sorted."""
    ds = h.ds
    out: dict = {}
    syntax = _standard_name(h.syntax)
    if syntax:
        out["TransferSyntaxUID"] = h.syntax
    for keyword in _TOP_KEYWORDS:
        if keyword in ("TransferSyntaxUID", _REGIONS) or keyword not in ds:
            continue
        v = _json_value(keyword, ds[keyword])
        if v is not None:
            out[keyword] = v
    if _REGIONS in ds and ds[_REGIONS].VR == "SQ":
        items = []
        for item in ds[_REGIONS].value:
            kept = {}
            for keyword in _REGION_KEYWORDS:
                if keyword in item:
                    v = _json_value(keyword, item[keyword])
                    if v is not None:
                        kept[keyword] = v
            items.append(dict(sorted(kept.items())))
        out[_REGIONS] = items
    return dict(sorted(out.items()))


def _burned_in(ds: Dataset) -> bool | None:
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    return True if value == "YES" else False if value == "NO" else None


# --- probe and decode ---------------------------------------------------------

def _load(path: str | os.PathLike[str]) -> _Image:
    return _image(_read_header(path))


def _check_series(first: _Image, other: _Image) -> None:
    if other.frames != 1:
        raise MediaError(other.header.path, f"a series is made of single-frame files; this one has {other.frames}")
    if (other.rows, other.columns) != (first.rows, first.columns):
        raise MediaError(other.header.path, f"mixed sizes in one series: {other.columns}x{other.rows}, "
                                            f"the first file is {first.columns}x{first.rows}")
    if other.samples != first.samples:
        raise MediaError(other.header.path, "mixed grey and colour frames in one series")


def _series(files: Sequence[str | os.PathLike[str]]) -> list[_Image]:
    if not files:
        raise ValueError("a DICOM clip needs at least one file")
    images = [_load(f) for f in files]
    if len(images) > 1:
        for other in images:
            _check_series(images[0], other)
    return images


def probe_dicom(files: Sequence[str | os.PathLike[str]], fps: float | None = None,
                max_pixels: int | None = None) -> ClipInfo:
    """Describe a DICOM clip: one file (multi- or single-frame), or the single-frame files
    of one series in frame order. Reads headers only. `fps` is the recipe's rate, used only
    when the file carries no timing (see ClipInfo.timing). MediaError names the file at fault,
    or says that its Columns x Rows is more than `max_pixels` pixels.

    For a series, `path` is the first file and `attributes` are the first file's.
    """
    images = _series(files)
    first = images[0]
    check_frame_size(first.header.path, first.columns, first.rows, max_pixels)
    ds = first.header.ds
    n = first.frames if len(images) == 1 else len(images)
    timing, rate, pts = _timing(ds, n, fps, len(images) > 1, first.header.path)
    regions, problems = _regions(ds, first.rows, first.columns)
    tissue = largest_tissue_region(regions)
    return ClipInfo(
        path=str(first.header.path),
        container="dicom",
        codec=SYNTAXES[first.header.syntax].short,
        fps=rate,
        n_frames=n,
        duration=n / rate if rate > 0 else 0.0,
        width=first.columns,
        height=first.rows,
        rotation=0,
        pix_fmt=f"{first.photometric.lower().replace(' ', '_')}-{first.bits_stored}",
        frames_counted=False,
        kind="dicom",
        transfer_syntax=first.header.syntax,
        photometric=first.photometric,
        bits=first.bits_stored,
        spacing_mm=tissue.spacing_mm if tissue else None,
        regions=regions,
        burned_in=_burned_in(ds),
        timing=timing,
        attributes=_attributes(first.header),
        region_problems=problems,
    )


def decode_dicom(files: Sequence[str | os.PathLike[str]], indices: Sequence[int],
                 fps: float | None = None) -> list[DecodedFrame]:
    """Decode the frames at `indices` of a DICOM clip (see `probe_dicom`), and only those.

    A multi-frame file is decoded frame by frame through its pinned plugin; a series
    reads the header of its first file and of the wanted files only. Indices past the
    last frame are left out; MediaError when none of them exists, or when a file is
    unreadable, its pixel data disagree with its header, or a frame cannot be decoded.
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    if not files:
        raise ValueError("a DICOM clip needs at least one file")
    first = _load(files[0])
    n = first.frames if len(files) == 1 else len(files)
    _, _, pts = _timing(first.header.ds, n, fps, len(files) > 1, first.header.path)
    present = [i for i in wanted if i < n]
    if not present:
        raise MediaError(first.header.path, f"only {n} frames, none of the wanted indices (first wanted {wanted[0]})")
    if len(files) == 1:
        return _decoded(first, present, present, pts)
    out = []
    for i in present:
        image = first if i == 0 else _load(files[i])
        _check_series(first, image)
        out += _decoded(image, [0], [i], pts)
    return out


def _decoded(image: _Image, indices: list[int], clip_indices: list[int], pts: list[float]) -> list[DecodedFrame]:
    """Frames `indices` of one file as DecodedFrames numbered `clip_indices` in the clip."""
    palette = _palette(image) if image.photometric == "PALETTE COLOR" else None
    return [_frame(image, ci, pts[ci], arr, pi, palette)
            for ci, (_, arr, pi) in zip(clip_indices, _decode_frames(image, indices))]


def _decode_frames(image: _Image, indices: list[int]) -> Iterator[tuple[int, np.ndarray, str]]:
    """(index, decoded array, photometric interpretation of that array) for each index, in order."""
    h = image.header
    syntax = SYNTAXES[h.syntax]
    decoder = get_decoder(UID(h.syntax))
    opts = as_pixel_options(h.ds, pixel_keyword="PixelData")
    if h.pixels.vr:
        opts["pixel_vr"] = h.pixels.vr
    # pydicom's runner turns native YBR_FULL_422 into YBR_FULL after the first frame and
    # then reads the next one with the wrong length: give each such frame its own runner.
    one_by_one = not syntax.plugin and image.photometric == "YBR_FULL_422"
    batches = [[i] for i in indices] if one_by_one else [indices]
    with h.path.open("rb") as f:
        for batch in batches:
            if h.syntax == _DEFLATED:
                src, kwargs = h.ds, {}
            else:
                f.seek(h.pixels.offset)
                src, kwargs = f, opts
            frames = decoder.iter_array(src, indices=batch, raw=True, decoding_plugin=syntax.plugin, **kwargs)
            for index in batch:
                try:
                    arr, props = next(frames)
                except StopIteration:
                    raise MediaError(h.path, f"frame {index} did not decode") from None
                except Exception as exc:  # noqa: BLE001 - plugins raise what their libraries raise
                    if environment_error(exc):
                        raise
                    text = str(exc).strip()
                    msg = text.splitlines()[0][:200] if text else ""
                    raise MediaError(h.path, f"cannot decode frame {index} ({syntax.package}): "
                                             f"{type(exc).__name__}{': ' + msg if msg else ''}") from exc
                yield index, arr, str(props.get("photometric_interpretation", image.photometric))


def _frame(image: _Image, index: int, pts: float, arr: np.ndarray, pi: str,
           palette: tuple[np.ndarray, np.ndarray] | None) -> DecodedFrame:
    """One decoded array -> DecodedFrame by the rules of the module doc."""
    if pi in _GREY:
        grey = _grey_to_8bit(image, arr)
        if pi == "MONOCHROME1":
            grey = 255 - grey
        return DecodedFrame(index=index, pts=pts, grey=np.ascontiguousarray(grey))
    if pi == "PALETTE COLOR" and palette is not None:
        rgb_table, grey_table = palette
        return DecodedFrame(index=index, pts=pts, grey=np.take(grey_table, arr), rgb=np.take(rgb_table, arr, axis=0))
    if pi == "RGB":
        rgb = arr if arr.dtype == np.uint8 and image.bits_stored == 8 else range_to_8bit(arr, image.bits_stored)
    elif pi in ("YBR_FULL", "YBR_FULL_422"):
        rgb = ycbcr_to_rgb(arr[..., 0], arr[..., 1], arr[..., 2], full_range=True)
    else:
        raise MediaError(image.header.path, f"the decoder returned {pi} frames, which us4 cannot convert")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return DecodedFrame(index=index, pts=pts, grey=to_grey(rgb), rgb=rgb)


def _grey_to_8bit(image: _Image, arr: np.ndarray) -> np.ndarray:
    if image.bits_allocated == 8 and image.bits_stored == 8 and not image.signed:
        return np.asarray(arr, dtype=np.uint8)
    thresholds = _voi_thresholds(image)
    if thresholds is not None:
        return thresholds_to_8bit(arr, thresholds)
    return range_to_8bit(arr, image.bits_stored, image.signed)


def _fraction(value) -> Fraction | None:
    # The decimal string as written (DS), so the thresholds are exact.
    try:
        text = str(value).strip()
        return Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None


def _voi_thresholds(image: _Image) -> np.ndarray | None:
    """255 stored-value thresholds of the first VOI window (module doc), or None without a usable one.

    Level k (1..255) starts where the windowed value rounds to k: for LINEAR (PS3.3
    C.11.2.1.2.1) at x = c - 1/2 + (w - 1) ((2k - 1)/510 - 1/2); for LINEAR_EXACT at
    x = c + w ((2k - 1)/510 - 1/2); x = stored * slope + intercept. Exact rationals.
    """
    ds = image.header.ds
    c = _fraction(_first(ds.get("WindowCenter")))
    w = _fraction(_first(ds.get("WindowWidth")))
    slope = _fraction(ds.get("RescaleSlope", 1)) or Fraction(1)
    intercept = _fraction(ds.get("RescaleIntercept", 0)) or Fraction(0)
    if c is None or w is None or slope <= 0:
        return None
    exact = str(ds.get("VOILUTFunction", "") or "").strip() == "LINEAR_EXACT"
    if (exact and w <= 0) or (not exact and w < 1):
        return None
    lo = -(1 << (image.bits_stored - 1)) if image.signed else 0
    hi = lo + (1 << image.bits_stored) - 1
    out = []
    for k in range(1, 256):
        rel = Fraction(2 * k - 1, 510) - Fraction(1, 2)
        x = c + w * rel if exact else c - Fraction(1, 2) + (w - 1) * rel
        t = (x - intercept) / slope
        stored = math.ceil(t)
        if not exact and w == 1 and stored == t:
            stored += 1  # width 1: a value exactly at c - 1/2 is still 0
        out.append(min(max(stored, lo - 1), hi + 1))
    return np.array(out, dtype=np.int64)


def _palette(image: _Image) -> tuple[np.ndarray, np.ndarray]:
    """The palette applied to every possible index (module doc): (2**BitsAllocated, 3) uint8 RGB,
    and the grey of each entry (to_grey works pixel by pixel, so a frame's grey is a lookup too)."""
    ds = image.header.ds
    index = np.arange(1 << image.bits_allocated, dtype=np.uint16 if image.bits_allocated == 16 else np.uint8)
    try:
        table = apply_color_lut(index, ds)
    except Exception as exc:  # noqa: BLE001 - a missing or malformed palette
        raise MediaError(image.header.path, f"unreadable palette ({type(exc).__name__})") from exc
    table = np.asarray(table)
    if table.dtype.itemsize > 1 and int(table.max()) > 255:
        table = table >> 8
    rgb = np.ascontiguousarray(table, dtype=np.uint8)
    return rgb, to_grey(rgb[None])[0]


# --- finding clips in a folder ------------------------------------------------

def find_dicom(root: str | os.PathLike[str],
               files: list[Path] | None = None) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, str]]]:
    """The DICOM clips under `root`, from headers alone (pixels are never read).

    Returns (clips, others), both sorted by `rel`: clips as (rel, files in frame order),
    others as (rel, reason). Every multi-frame file is a clip. Single-frame files sharing
    a Series Instance UID in one folder form one clip, ordered by Instance Number; files
    without a number follow those with one, and ties (equal or absent numbers) go by
    natural order of file name. A single-frame file alone in its series (or without a
    Series Instance UID) is a clip by itself. A series' rel is its folder ("." for
    `root`), or its first file's rel when the folder holds several series. `rel` and
    reasons never carry header values. `files`: the listing of `root`, where the caller has it.
    """
    root = Path(root)
    clips: list[tuple[str, tuple[str, ...]]] = []
    others: list[tuple[str, str]] = []
    series: dict[tuple[Path, str], list[tuple[int | None, Path]]] = {}
    for path in walk_files(root) if files is None else files:
        rel = rel_posix(path, root)
        try:
            header = _read_header(path)
        except MediaError as exc:
            others.append((rel, exc.reason))
            continue
        reason = _not_a_clip(header)
        if reason:
            others.append((rel, reason))
            continue
        frames = _int(header.ds.get("NumberOfFrames", 1) or 1)
        uid = str(header.ds.get("SeriesInstanceUID", "") or "")
        if frames != 1 or not uid:
            clips.append((rel, (str(path),)))
            continue
        series.setdefault((path.parent, uid), []).append((_int(header.ds.get("InstanceNumber")), path))
    several = Counter(folder for (folder, _), members in series.items() if len(members) > 1)
    for (folder, _), members in series.items():
        members.sort(key=lambda m: (m[0] is None, m[0] or 0, natural_key(m[1].name)))
        paths = tuple(str(p) for _, p in members)
        if len(members) == 1 or several[folder] > 1:
            rel = rel_posix(members[0][1], root)
        else:
            rel = rel_posix(folder, root)
        clips.append((rel, paths))
    return sorted(clips), sorted(others)
