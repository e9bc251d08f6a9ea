"""Reading DICOM headers: one file's dataset up to its pixel data, checked against what us4
decodes (syntax, photometric interpretation, bit depth, the pixel data's extent), the files of
a series against each other, and what a clip declares (`probe_dicom`): timing, scanner
regions, Burned In Annotation and the allow-listed attributes. Headers only, never pixels."""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from ..crop import largest_tissue_region
from ..gate import check_file, check_frame_size, reading
from ..types import Box, ClipInfo, MediaError, Region
from .policy import (MODALITIES, PHOTOMETRIC_TERMS, REGIONS, as_float, as_int, as_positive, attributes,
                     standard_name)

__all__ = ["DICOM_SUFFIXES", "SYNTAXES", "Syntax", "is_dicom_file", "probe_dicom"]

#: Suffixes that mark a file as DICOM without looking inside (the DICM preamble also does).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


class Syntax(NamedTuple):
    """A transfer syntax us4 reads: its short name (ClipInfo.codec), the pydicom decoding
    plugin pinned for it ("" for native data) and the package whose code decodes it."""

    short: str
    plugin: str
    package: str


#: Transfer syntaxes read here, each tested on files written by `us4.phantom.dicom`. Lossy
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
DEFLATED = "1.2.840.10008.1.2.1.99"
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

_PHOTOMETRIC = {  # supported interpretation -> samples per pixel
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3,
    "YBR_FULL": 3, "YBR_FULL_422": 3, "YBR_RCT": 3, "YBR_ICT": 3,
}
#: Defined terms of Photometric Interpretation (PS3.3 C.7.6.3.1.2): the only values quoted back.

# --- reading a header --------------------------------------------------------

@dataclass(frozen=True)
class Pixels:
    """Where the Pixel Data value starts, its length (None: encapsulated) and its VR."""

    offset: int
    length: int | None
    vr: str | None


@dataclass(frozen=True)
class Header:
    path: Path
    ds: Dataset                 # everything before the pixel data (all of it for deflated files)
    syntax: str
    pixels: Pixels | None


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a file with a DICOM suffix (.dcm, .dicom) or the DICM preamble marker."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        return _has_marker(p)
    except MediaError:  # unreadable, but not for a fault of this machine (those go on up)
        return False


def _has_marker(p: Path) -> bool:
    with reading(p, lambda exc: f"cannot read ({type(exc).__name__}: {exc.strerror or exc})", (OSError,)):
        with p.open("rb") as f:
            head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def read_header(path: str | os.PathLike[str]) -> Header:
    """The dataset up to the pixel data, and where the pixel data lies. MediaError when not DICOM."""
    p = check_file(path)
    marker = _has_marker(p)
    if not marker and p.suffix.lower() not in DICOM_SUFFIXES | {""}:
        raise MediaError(path, f"not DICOM (no DICM marker; suffix {p.suffix.lower()!r})")
    with p.open("rb") as f:
        # pydicom raises many kinds on garbage, and their text may quote header bytes: name the type only.
        with reading(path, lambda exc: f"not DICOM (the header cannot be parsed: {type(exc).__name__})"):
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=not marker)
        implicit, little = ds.original_encoding
        meta_syntax = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
        if not marker and "SOPClassUID" not in ds and "Rows" not in ds:
            raise MediaError(path, "not DICOM (no DICM marker and no DICOM image header)")
        if meta_syntax:
            syntax = str(meta_syntax)
        else:  # no file meta: the encoding pydicom found
            syntax = "1.2.840.10008.1.2" if implicit is not False else (
                "1.2.840.10008.1.2.1" if little is not False else "1.2.840.10008.1.2.2")
        if syntax == DEFLATED:
            return _read_deflated(p)
        if standard_name(syntax) is None:  # its encoding is unknown: the pixel data cannot be found
            return Header(p, ds, syntax, None)
        pixels = _pixel_element(f, implicit is not False, little is not False, path)
    return Header(p, ds, syntax, pixels)


def _read_deflated(p: Path) -> Header:
    # The dataset is one zlib stream: no offsets into the file exist, so read it whole.
    with reading(p, lambda exc: f"cannot inflate the deflated dataset ({type(exc).__name__})"):
        ds = pydicom.dcmread(p)
    pixels = Pixels(0, len(ds.PixelData), None) if "PixelData" in ds else None
    return Header(p, ds, DEFLATED, pixels)


def _pixel_element(f, implicit: bool, little: bool, path) -> Pixels | None:
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
        return Pixels(start + 8, None if length == 0xFFFFFFFF else length, None)
    vr = head[4:6].decode("ascii", "replace")
    if vr in ("OB", "OW", "UN", "OV", "OL", "OF", "OD"):
        more = f.read(4)
        if len(more) < 4:
            raise MediaError(path, "truncated pixel data (the file ends inside its element header)")
        (length,) = struct.unpack(e + "L", more)
        return Pixels(start + 12, None if length == 0xFFFFFFFF else length, vr)
    (length,) = struct.unpack(e + "H", head[6:])
    return Pixels(start + 8, length, vr)


def _sop_class(h: Header) -> str:
    sop = h.ds.get("SOPClassUID")
    if not sop and getattr(h.ds, "file_meta", None) is not None:
        sop = h.ds.file_meta.get("MediaStorageSOPClassUID")
    return str(sop or "")


def _describe_class(h: Header) -> str:
    return standard_name(_sop_class(h)) or "a non-standard SOP class"


def not_a_clip(h: Header) -> str | None:
    """Why a readable DICOM file is no ultrasound image at all, or None when it is one."""
    sop = _sop_class(h)
    modality = str(h.ds.get("Modality", "") or "")
    is_us = sop in US_SOP_CLASSES or modality == "US"
    if sop == _MEDIA_DIRECTORY or "DirectoryRecordSequence" in h.ds:
        return "not an image: a DICOMDIR (media index)"
    if h.pixels is None and standard_name(h.syntax) is not None:  # else the syntax is what `_image` reports
        if is_us:
            return "DICOM without pixel data"
        return f"not an image: {_describe_class(h)} without pixel data"
    if not is_us:
        shown = modality if modality in MODALITIES else "not US"
        return f"not an ultrasound image ({_describe_class(h)}, modality {shown})"
    return None


@dataclass(frozen=True)
class Image:
    """A validated header: what decoding needs."""

    header: Header
    frames: int
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool


def _image(h: Header) -> Image:
    """Check that `h` is an ultrasound image us4 can decode; MediaError naming the cause if not."""
    path, ds = h.path, h.ds
    reason = not_a_clip(h)
    if reason:
        raise MediaError(path, reason)
    syntax = SYNTAXES.get(h.syntax)
    if syntax is None:
        raise MediaError(path, _unsupported_syntax(h.syntax))
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if pi not in _PHOTOMETRIC:
        shown = pi if pi in PHOTOMETRIC_TERMS else "not a DICOM defined term" if pi else "missing"
        raise MediaError(path, f"unsupported photometric interpretation ({shown}); us4 reads "
                               + ", ".join(sorted(_PHOTOMETRIC)))
    rows, columns = as_int(ds.get("Rows")), as_int(ds.get("Columns"))
    if not rows or not columns or rows < 0 or columns < 0:
        raise MediaError(path, "no image size (Rows or Columns missing or zero)")
    samples = as_int(ds.get("SamplesPerPixel")) or 1
    if samples != _PHOTOMETRIC[pi]:
        raise MediaError(path, f"{pi} needs {_PHOTOMETRIC[pi]} samples per pixel, the file has {samples}")
    alloc, stored = as_int(ds.get("BitsAllocated")), as_int(ds.get("BitsStored"))
    stored = stored or alloc
    if alloc not in (8, 16) or not stored or not 1 <= stored <= alloc:
        raise MediaError(path, f"unsupported bit depth (Bits Allocated {alloc}, Bits Stored {stored}); "
                               "us4 reads 8 and 16 bits allocated")
    if pi.startswith("YBR") and pi not in ("YBR_RCT", "YBR_ICT") and alloc != 8:
        raise MediaError(path, f"unsupported {alloc}-bit {pi} (8-bit only)")
    if h.syntax in _JPEG_8BIT_ONLY and stored > 8:
        raise MediaError(path, f"unsupported {stored}-bit JPEG Extended (us4 reads its 8-bit form only)")
    raw_frames = ds.get("NumberOfFrames", 1)
    frames = as_int(raw_frames if raw_frames not in (None, "") else 1)
    if frames is None or frames < 1:
        raise MediaError(path, "invalid Number of Frames (not a positive whole number)")
    image = Image(h, frames, rows, columns, samples, pi, alloc, stored, as_int(ds.get("PixelRepresentation")) == 1)
    _check_pixel_data(image)
    return image


def _unsupported_syntax(uid: str) -> str:
    name = standard_name(uid)
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


def _frame_bytes(image: Image) -> int:
    """Bytes of one natively encoded frame (YBR_FULL_422 stores two luma per chroma pair)."""
    pixels = image.rows * image.columns
    if image.photometric == "YBR_FULL_422":
        return pixels * 2 * image.bits_allocated // 8
    return pixels * image.samples * image.bits_allocated // 8


def _check_pixel_data(image: Image) -> None:
    """The pixel data element against Number of Frames and the file size, reading headers only."""
    h, path = image.header, image.header.path
    px = h.pixels
    assert px is not None  # not_a_clip ruled it out
    n = image.frames
    encapsulated = bool(SYNTAXES[h.syntax].plugin)
    if encapsulated != (px.length is None):
        raise MediaError(path, f"pixel data {'not ' if encapsulated else ''}encapsulated, against its "
                               f"transfer syntax ({SYNTAXES[h.syntax].short})")
    if px.length is not None:
        frame = _frame_bytes(image)
        expected = frame * n
        available = px.length if h.syntax == DEFLATED else min(px.length, h.path.stat().st_size - px.offset)
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


def _items(h: Header) -> list[tuple[int, int]]:
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

def frame_timing(ds: Dataset, n: int, recipe_fps: float | None, series: bool, path) -> tuple[str, float, list[float]]:
    """(where the rate came from, fps, pts of every frame in seconds). Invalid values (zero,
    negative, unreadable, a vector of the wrong length) count as absent."""
    ft = as_positive(ds.get("FrameTime"))
    if ft is not None:
        return "frame_time", 1000.0 / ft, [i * ft / 1000.0 for i in range(n)]
    if not series and n > 1:
        vector = ds.get("FrameTimeVector")
        values = [as_float(v) for v in (vector if isinstance(vector, (list, tuple, MultiValue))
                                      else [vector])] if vector is not None else []
        if len(values) == n and all(v is not None and v >= 0 for v in values) and sum(values[1:]) > 0:
            # The first entry is the time before the first frame: 0 by definition (PS3.3 C.7.6.5.1.2).
            pts, t = [0.0], 0.0
            for v in values[1:]:
                t += v
                pts.append(t / 1000.0)
            return "frame_time_vector", (n - 1) / pts[-1], pts
    for keyword, name in (("CineRate", "cine_rate"), ("RecommendedDisplayFrameRate", "recommended_display_frame_rate")):
        rate = as_positive(ds.get(keyword))
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
    for n, item in enumerate(ds.get(REGIONS, None) or [], 1):
        x0, y0 = as_int(item.get("RegionLocationMinX0")), as_int(item.get("RegionLocationMinY0"))
        x1, y1 = as_int(item.get("RegionLocationMaxX1")), as_int(item.get("RegionLocationMaxY1"))
        if None in (x0, y0, x1, y1):
            continue
        where = f"ultrasound region {n} (x {x0}..{x1}, y {y0}..{y1})"
        if x1 < x0 or y1 < y0:
            problems.append(f"{where} is inverted (a Max before its Min): left out, not used as the crop")
            continue
        if x0 < 0 or y0 < 0 or x1 >= columns or y1 >= rows:
            problems.append(f"{where} reaches beyond the {columns}x{rows} frame: left out, not used as the crop")
            continue
        units = (as_int(item.get("PhysicalUnitsXDirection")), as_int(item.get("PhysicalUnitsYDirection")))
        delta = (as_float(item.get("PhysicalDeltaX")), as_float(item.get("PhysicalDeltaY")))
        spacing = None
        if units == (3, 3) and delta[0] and delta[1]:  # 3 = cm
            spacing = (abs(delta[0]) * 10.0, abs(delta[1]) * 10.0)
        out.append(Region(box=Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                          spatial_format=as_int(item.get("RegionSpatialFormat")),
                          data_type=as_int(item.get("RegionDataType")), units=units, delta=delta, spacing_mm=spacing))
    return tuple(out), tuple(problems)


def _burned_in(ds: Dataset) -> bool | None:
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    return True if value == "YES" else False if value == "NO" else None


# --- one clip: a file or a series -------------------------------------------

def load(path: str | os.PathLike[str]) -> Image:
    return _image(read_header(path))


def check_series(first: Image, other: Image) -> None:
    if other.frames != 1:
        raise MediaError(other.header.path, f"a series is made of single-frame files; this one has {other.frames}")
    if (other.rows, other.columns) != (first.rows, first.columns):
        raise MediaError(other.header.path, f"mixed sizes in one series: {other.columns}x{other.rows}, "
                                            f"the first file is {first.columns}x{first.rows}")
    if other.samples != first.samples:
        raise MediaError(other.header.path, "mixed grey and colour frames in one series")


def _series(files: Sequence[str | os.PathLike[str]]) -> list[Image]:
    if not files:
        raise ValueError("a DICOM clip needs at least one file")
    images = [load(f) for f in files]
    if len(images) > 1:
        for other in images:
            check_series(images[0], other)
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
    timing, rate, pts = frame_timing(ds, n, fps, len(images) > 1, first.header.path)
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
        attributes=attributes(ds, first.header.syntax),
        region_problems=problems,
    )

