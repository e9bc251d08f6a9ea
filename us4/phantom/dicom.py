"""Phantom DICOM files and image sequences: real files, written from the phantom clips' frames.

`write_phantom_dicom` writes Ultrasound (Multi-frame) Image Storage files in any
transfer syntax us4 reads, compressed by a real encoder (pydicom's RLE, Pillow's
libjpeg-turbo for JPEG, CharLS (pyjpegls) for JPEG-LS, OpenJPEG through pydicom for
JPEG 2000), with a Sequence of Ultrasound Regions (single or dual view) and, on request,
identifying values in every class of tag a scanner writes: patient, institution,
people, accession, instance UIDs, dates and times, station, device serial, and a
private tag. `write_phantom_sequence` writes numbered PNG/JPEG/TIFF frames. The same
arguments give the same bytes (no clock, no random UID).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence

from ..media import Box, Region
from ..media.dicom import SYNTAXES
from .clips import phantom_frames

__all__ = ["PLANTED_IDENTITY", "PRIVATE_CREATOR", "write_phantom_dicom", "write_phantom_sequence"]

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"

#: Identifying values of every kind a scanner writes, for de-identification tests. The key
#: "Private" goes into a private tag (0009,1010) under PRIVATE_CREATOR.
PLANTED_IDENTITY: dict[str, str] = {
    "PatientName": "PLANTEDDOE^JANE",
    "PatientID": "PID-PLANTED-4711",
    "PatientBirthDate": "19450317",
    "OtherPatientIDs": "OPID-PLANTED-99",
    "InstitutionName": "PLANTED GENERAL HOSPITAL",
    "InstitutionAddress": "1 PLANTED ROAD, PLANTVILLE",
    "InstitutionalDepartmentName": "PLANTED CARDIOLOGY",
    "OperatorsName": "PLANTEDOPERATOR^OLIVIA",
    "ReferringPhysicianName": "PLANTEDREFERRER^ROB",
    "PerformingPhysicianName": "PLANTEDPERFORMER^PAT",
    "AccessionNumber": "ACC-PLANTED-0815",
    "StudyID": "STUDY-PLANTED-5",
    "StudyDescription": "PLANTED STUDY DESCRIPTION",
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.9471.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.10.9471.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.9471.3",
    "StudyDate": "19990521",
    "SeriesDate": "19990522",
    "AcquisitionDate": "19990523",
    "ContentDate": "19990524",
    "StudyTime": "134501",
    "ContentTime": "134502",
    "AcquisitionDateTime": "19990523134503",
    "StationName": "PLANTED-STN-7",
    "DeviceSerialNumber": "SN-PLANTED-31337",
    "Manufacturer": "PLANTED MEDICAL SYSTEMS",
    "ManufacturerModelName": "PLANTED MODEL X9",
    "Private": "PRIVATE-PLANTED-VALUE",
}
PRIVATE_CREATOR = "US4 PHANTOM"

_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR"}
#: Photometric interpretations each syntax family is written with (what scanners do).
_ALLOWED = {
    "raw": {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"},
    "rle": {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR"},
    "jpeg": {"MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422"},
    "jpeg-ls": {"MONOCHROME2", "RGB"},
    "jpeg2000-lossless": {"MONOCHROME2", "RGB", "YBR_RCT"},
    "jpeg2000": {"MONOCHROME2", "RGB", "YBR_ICT"},
}
_SPACING_CM = 0.02  # PhysicalDeltaX/Y of the phantom's regions: 0.2 mm per pixel


def _syntax_uid(transfer_syntax: str) -> str:
    if transfer_syntax in SYNTAXES:
        return transfer_syntax
    for uid, s in SYNTAXES.items():
        if s.short == transfer_syntax:
            return uid
    raise ValueError(f"unknown transfer syntax {transfer_syntax!r}; use one of "
                     f"{sorted(s.short for s in SYNTAXES.values())} or their UIDs")


def _family(short: str) -> str:
    if short.startswith("raw-"):
        return "raw"
    if short in ("jpeg-baseline", "jpeg-extended"):
        return "jpeg"
    if short.startswith("jpeg-ls"):
        return "jpeg-ls"
    return short


def _uid(seed: int, what: str) -> str:
    # A deterministic UID under the 2.25 (UUID-derived) root.
    return "2.25." + str(int(hashlib.sha256(f"us4-phantom/{seed}/{what}".encode()).hexdigest()[:30], 16))


def _rgb_to_ybr(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr of uint8 RGB, in 16.16 fixed point (the inverse of pixels.ycbcr_to_rgb)."""
    c = rgb.astype(np.int64)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
    cb = ((-11059 * r - 21709 * g + 32768 * b + 32768) >> 16) + 128
    cr = ((32768 * r - 27439 * g - 5329 * b + 32768) >> 16) + 128
    return np.clip(np.stack([y, cb, cr], axis=-1), 0, 255).astype(np.uint8)


def _palette() -> tuple[np.ndarray, np.ndarray]:
    """A fixed 256-entry palette (16-bit entries): grey 0..191, red 192..223, blue 224..255,
    and its 8-bit RGB (what a reader must return)."""
    rgb = np.zeros((256, 3), np.int64)
    grey = np.arange(192) * 255 // 191
    rgb[:192] = grey[:, None]
    ramp = np.arange(32) * 255 // 31
    rgb[192:224, 0] = ramp
    rgb[224:, 2] = ramp
    return (rgb * 257).astype(np.uint16), rgb.astype(np.uint8)


def _to_palette(frames: np.ndarray) -> np.ndarray:
    """Indices into `_palette()` for phantom colour frames (grey, red or blue pixels)."""
    r, g, b = (frames[..., i].astype(np.int64) for i in range(3))
    index = (g * 191 + 127) // 255
    red = (r > g + 40) & (r >= b)
    blue = (b > g + 40) & (b > r)
    index = np.where(red, 192 + (r * 31 + 127) // 255, index)
    index = np.where(blue, 224 + (b * 31 + 127) // 255, index)
    return index.astype(np.uint8)


def _deepen(a: np.ndarray, bits: int) -> np.ndarray:
    """8-bit levels to `bits` stored bits, round(v * (2**bits - 1) / 255)."""
    top = (1 << bits) - 1
    return ((a.astype(np.int64) * 2 * top + 255) // 510).astype(np.uint16)


def _dual(seed: int, n_frames: int, size: tuple[int, int], shape: str, text: str | None,
          colour: bool) -> tuple[np.ndarray, list[Box]]:
    """Two phantom views side by side (a dual-view screen), and their scan boxes."""
    w, h = size
    half = (w // 2, h)
    left, ll = phantom_frames(seed, n_frames, half, shape, text, colour, 0)
    right, rl = phantom_frames(seed + 1, n_frames, half, shape, None, colour, 0)
    boxes = [ll.scan, Box(rl.scan.x + w // 2, rl.scan.y, rl.scan.w, rl.scan.h)]
    return np.concatenate([left, right], axis=2), boxes


def _region(box: Box, spacing_cm: float = _SPACING_CM) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.RegionFlags = 0
    item.RegionLocationMinX0 = box.x
    item.RegionLocationMinY0 = box.y
    item.RegionLocationMaxX1 = box.x + box.w - 1
    item.RegionLocationMaxY1 = box.y + box.h - 1
    item.PhysicalUnitsXDirection = 3
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = spacing_cm
    item.PhysicalDeltaY = spacing_cm
    return item


def _region_item(r: Region) -> Dataset:
    item = _region(r.box)
    item.RegionSpatialFormat = r.spatial_format if r.spatial_format is not None else 0
    item.RegionDataType = r.data_type if r.data_type is not None else 0
    for name, v in zip(("PhysicalUnitsXDirection", "PhysicalUnitsYDirection"), r.units):
        if v is None:
            delattr(item, name)
        else:
            setattr(item, name, v)
    for name, v in zip(("PhysicalDeltaX", "PhysicalDeltaY"), r.delta):
        if v is None:
            delattr(item, name)
        else:
            setattr(item, name, v)
    return item


def _base(seed: int, sop_class: str, uid: str, identity: Mapping[str, str] | None, index: int | None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ident = dict(identity or {})
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, ident.pop(keyword, None) or _uid(seed, keyword))
    sop = ident.pop("SOPInstanceUID", None) or _uid(seed, "SOPInstanceUID")
    ds.SOPInstanceUID = sop if index is None else f"{sop}.{index + 1}"
    ds.Modality = "US"
    private = ident.pop("Private", None)
    for keyword, value in sorted(ident.items()):
        setattr(ds, keyword, value)
    if private is not None:
        block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
        block.add_new(0x10, "LO", private)
    if index is not None:
        ds.InstanceNumber = index + 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid
    return ds


def _pixels_of(frames: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    """Frames (n, h, w, 3 uint8) -> the sample array the file stores."""
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = frames[..., 0] if photometric == "MONOCHROME2" else 255 - frames[..., 0]
        return _deepen(grey, bits) if bits > 8 else grey
    if photometric == "PALETTE COLOR":
        return _to_palette(frames)
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return _rgb_to_ybr(frames)
    return _deepen(frames, bits) if bits > 8 else frames


def _native(samples: np.ndarray, photometric: str, big_endian: bool) -> bytes:
    if photometric == "YBR_FULL_422":
        # Native 4:2:2 stores Y0 Y1 Cb Cr per pixel pair, chroma taken from the pair's first pixel.
        n, h, w, _ = samples.shape
        pairs = samples.reshape(n, h, w // 2, 2, 3)
        packed = np.stack([pairs[..., 0, 0], pairs[..., 1, 0], pairs[..., 0, 1], pairs[..., 0, 2]], axis=-1)
        return packed.tobytes()
    if samples.dtype == np.uint16:
        return samples.astype(">u2" if big_endian else "<u2").tobytes()
    return samples.tobytes()


def _jpeg(frame: np.ndarray, photometric: str) -> bytes:
    buf = io.BytesIO()
    if photometric == "MONOCHROME2":
        Image.fromarray(frame[..., 0] if frame.ndim == 3 else frame).save(buf, "JPEG", quality=90, optimize=False)
    elif photometric == "RGB":
        Image.fromarray(frame).save(buf, "JPEG", quality=90, optimize=False, keep_rgb=True, subsampling="4:4:4")
    else:
        sub = "4:2:2" if photometric == "YBR_FULL_422" else "4:4:4"
        Image.fromarray(frame).save(buf, "JPEG", quality=90, optimize=False, subsampling=sub)
    return buf.getvalue()


def _encapsulated(ds: Dataset, frames: list[bytes]) -> None:
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def write_phantom_dicom(path, *, seed: int, n_frames: int = 12, size: tuple[int, int] = (224, 192),
                        transfer_syntax: str = "rle", photometric: str = "MONOCHROME2", bits: int = 8,
                        regions: str | Sequence[Region] | None = "single", frame_time_ms: float | None = 50.0,
                        identity: Mapping[str, str] | None = None, text: str | None = "US4 PHANTOM 12cm",
                        multi_frame: bool = True, shape: str = "sector",
                        window: tuple[float, float] | None = None) -> list[Path]:
    """Write a phantom ultrasound clip as real DICOM and return the files written, in frame order.

    `multi_frame`: one Ultrasound Multi-frame Image Storage file at `path`; else `path`
    is a folder receiving one Ultrasound Image Storage file per frame, IMG0001.dcm ...,
    sharing a series and numbered by Instance Number. `transfer_syntax` is a short name
    of `dicom.SYNTAXES` ("rle", "jpeg-baseline", ...) or its UID; `photometric` must suit
    it (JPEG: MONOCHROME2, RGB, YBR_FULL(_422); JPEG-LS: MONOCHROME2, RGB; JPEG 2000:
    MONOCHROME2, RGB and YBR_RCT (lossless) or YBR_ICT (lossy); native and RLE: also
    MONOCHROME1 and PALETTE COLOR, native also YBR_FULL_422). `bits` is Bits Stored
    (8, or up to 16 in 16 allocated; grey and RGB only): level v is stored as
    round(v (2**bits - 1) / 255). `regions`: "single" (the scan region, 2D tissue, 0.2 mm
    per pixel), "dual" (two views side by side, each a region; width a multiple of 4),
    None, or explicit Regions. `frame_time_ms` is written as Frame Time (None: no timing).
    `identity` (e.g. PLANTED_IDENTITY) plants its values; `text` is burned into the pixels
    (and Burned In Annotation says so). `window` writes Window Center/Width.
    """
    path = Path(path)
    uid = _syntax_uid(transfer_syntax)
    short = SYNTAXES[uid].short
    family = _family(short)
    if photometric not in _ALLOWED[family]:
        raise ValueError(f"{short} files are written with {sorted(_ALLOWED[family])}, not {photometric!r}")
    if not (bits == 8 or (9 <= bits <= 16 and photometric in ("MONOCHROME1", "MONOCHROME2", "RGB")
                          and family in ("raw", "rle", "jpeg-ls", "jpeg2000-lossless", "jpeg2000"))):
        raise ValueError(f"bits={bits} is not written for {photometric} in {short}")
    if family == "jpeg-ls" and photometric == "RGB" and bits > 8:
        raise ValueError("JPEG-LS phantoms are 8-bit in colour")
    w, h = size
    if regions == "dual" and w % 4:
        raise ValueError(f"a dual view needs a width that is a multiple of 4, got {w}")
    colour = photometric in _COLOUR
    if regions == "dual":
        frames, boxes = _dual(seed, n_frames, size, shape, text, colour)
        region_items = [_region(b) for b in boxes]
    else:
        frames, layout = phantom_frames(seed, n_frames, size, shape, text, colour, 0)
        if regions == "single":
            region_items = [_region(layout.scan)]
        elif regions is None:
            region_items = []
        elif isinstance(regions, str):
            raise ValueError(f"regions must be 'single', 'dual', None or Regions, got {regions!r}")
        else:
            region_items = [_region_item(r) for r in regions]
    samples = _pixels_of(frames, photometric, bits)

    def dataset(index: int | None, count: int) -> Dataset:
        ds = _base(seed, US_MULTIFRAME if index is None else US_IMAGE, uid, identity, index)
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 3 if colour and photometric != "PALETTE COLOR" else 1
        ds.PhotometricInterpretation = photometric
        if ds.SamplesPerPixel == 3:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated = 8 if bits == 8 else 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        if index is None:
            ds.NumberOfFrames = count
            if frame_time_ms is not None:
                ds.FrameIncrementPointer = 0x00181063
        if frame_time_ms is not None:
            ds.FrameTime = frame_time_ms
        if photometric == "PALETTE COLOR":
            lut, _ = _palette()
            for colour_name, channel in zip(("Red", "Green", "Blue"), range(3)):
                setattr(ds, f"{colour_name}PaletteColorLookupTableDescriptor", [256, 0, 16])
                setattr(ds, f"{colour_name}PaletteColorLookupTableData", lut[:, channel].astype("<u2").tobytes())
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.BurnedInAnnotation = "YES" if text else "NO"
        if region_items:
            ds.SequenceOfUltrasoundRegions = DicomSequence([Dataset(r) for r in region_items])
        if family in ("jpeg", "jpeg-ls", "jpeg2000") or short == "jpeg2000-lossless":
            ds.LossyImageCompression = "00" if short in ("jpeg-ls", "jpeg2000-lossless") else "01"
        return ds

    def fill(ds: Dataset, part: np.ndarray, colour_frames: np.ndarray) -> None:
        if family == "raw":
            ds.PixelData = _native(part, photometric, short == "raw-explicit-be")
            ds["PixelData"].VR = "OW" if bits > 8 else "OB"
        elif family == "jpeg":
            _encapsulated(ds, [_jpeg(f, photometric) for f in colour_frames])
        elif family == "jpeg-ls":  # CharLS, through pydicom's pyjpegls encoding plugin
            arr = part if len(part) > 1 else part[0]
            ds.compress(uid, arr, encoding_plugin="pyjpegls", generate_instance_uid=False,
                        jls_error=2 if short == "jpeg-ls-near" else 0)
        else:
            arr = colour_frames if photometric in ("YBR_RCT", "YBR_ICT") else part
            arr = arr if len(arr) > 1 else arr[0]
            plugin = "pydicom" if family == "rle" else "pylibjpeg"
            extra = {"j2k_cr": [8]} if short == "jpeg2000" else {}
            ds.compress(uid, arr, encoding_plugin=plugin, generate_instance_uid=False, **extra)

    written: list[Path] = []
    if multi_frame:
        ds = dataset(None, n_frames)
        fill(ds, samples, frames)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for i in range(n_frames):
            ds = dataset(i, 1)
            fill(ds, samples[i: i + 1], frames[i: i + 1])
            out = path / f"IMG{i + 1:04d}.dcm"
            ds.save_as(out, enforce_file_format=True)
            written.append(out)
    return written


def write_phantom_sequence(folder, *, seed: int, n_frames: int = 12, size: tuple[int, int] = (224, 192),
                           ext: str = ".png", text: str | None = "US4 PHANTOM 12cm", colour: bool = False,
                           bits: int = 8, pad: int = 4, start: int = 1, shape: str = "sector") -> list[Path]:
    """Write a phantom clip as numbered frame images, frame_0001.png ..., and return them in order.

    `ext` is .png, .jpg/.jpeg (quality 90) or .tif/.tiff (uncompressed); `bits=16` writes
    16-bit grey (PNG or TIFF), level v stored as v * 257; `pad` is the width of the
    zero-padded number (1: frame_1, ..., frame_10, which only natural order sorts right);
    `start` the first number.
    """
    ext = ext.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        raise ValueError(f"unsupported frame suffix {ext!r}")
    if bits not in (8, 16) or (bits == 16 and (colour or ext in (".jpg", ".jpeg"))):
        raise ValueError(f"bits={bits} is not written for colour={colour}, {ext}")
    frames, _ = phantom_frames(seed, n_frames, size, shape, text, colour, 0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, frame in enumerate(frames):
        p = folder / f"frame_{start + i:0{pad}d}{ext}"
        if colour:
            img = Image.fromarray(frame)
        elif bits == 16:
            img = Image.fromarray(frame[..., 0].astype(np.uint16) * 257)  # uint16 -> mode I;16
        else:
            img = Image.fromarray(frame[..., 0])
        if ext in (".jpg", ".jpeg"):
            img.save(p, "JPEG", quality=90, optimize=False)
        elif ext == ".png":
            img.save(p, "PNG", compress_level=6, optimize=False)
        else:
            img.save(p, "TIFF")
        out.append(p)
    return out
