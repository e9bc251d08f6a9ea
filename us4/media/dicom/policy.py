"""The DICOM allow-list policy: which attributes may leave the media layer (and reach a release),
and which of their values are safe (numbers, standard UIDs, defined terms: never free text).
The standard's names of UIDs are the only names quoted back; a value outside the policy is
never read into `ClipInfo` nor quoted in an error reason."""
from __future__ import annotations

import math
from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

__all__ = ["DICOM_ALLOWED", "AllowedAttribute", "allowed_table", "syntax_name"]

#: Defined terms of Photometric Interpretation (PS3.3 C.7.6.3.1.2): the only values quoted back.
PHOTOMETRIC_TERMS = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
                               "YBR_RCT", "YBR_ICT", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422", "YBR_PARTIAL_420",
                               "XYZ"})
#: Defined terms of Modality (PS3.3 C.7.3.1.1.1), current and retired, for attributes and messages.
MODALITIES = frozenset(
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
REGIONS = "SequenceOfUltrasoundRegions"
_REGION_KEYWORDS = tuple(a.keyword for a in DICOM_ALLOWED if a.group == "ultrasound regions" and a.keyword != REGIONS)
_TOP_KEYWORDS = tuple(a.keyword for a in DICOM_ALLOWED if a.group != "ultrasound regions")
_DEFINED_TERMS = {
    "PhotometricInterpretation": PHOTOMETRIC_TERMS,
    "Modality": MODALITIES,
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "BurnedInAnnotation": frozenset({"YES", "NO"}),
    "LossyImageCompression": frozenset({"00", "01"}),
}


def allowed_table() -> str:
    """The allow-list as a Markdown table (for the dataset card)."""
    lines = ["| tag | attribute | group | kept values |", "|---|---|---|---|"]
    lines += [f"| {a.tag} | {a.keyword} | {a.group} | {a.values} |" for a in DICOM_ALLOWED]
    return "\n".join(lines)


def standard_name(uid: object) -> str | None:
    """The standard's name of a UID, or None for a UID the standard does not define."""
    u = UID(str(uid or ""))
    name = u.name
    return name if name and name != str(u) else None


def syntax_name(uid: str) -> str:
    """The standard's name of a transfer syntax UID (the UID itself when the standard has none)."""
    return standard_name(uid) or str(uid)


# --- values as the policy reads them: numbers only when finite ----------------

def as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def as_positive(value) -> float | None:
    v = as_float(value)
    return v if v is not None and v > 0 else None


def first_value(value):
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


def _json_value(keyword: str, elem) -> object | None:
    """A JSON-ready value of an allow-listed element, or None when it is not a safe value."""
    value = elem.value
    if elem.VR == "UI":
        return str(value) if standard_name(value) else None
    if elem.VR == "CS":
        text = str(first_value(value) or "").strip()
        return text if text in _DEFINED_TERMS.get(keyword, ()) else None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    nums = []
    for v in values:
        f = as_float(v)
        if f is None:
            return None
        nums.append(int(f) if elem.VR in ("IS", "US", "UL", "SS", "SL") else f)
    if not nums:
        return None
    return nums if len(nums) > 1 or keyword in ("FrameTimeVector", "PixelAspectRatio") else nums[0]


def attributes(ds: Dataset, syntax_uid: str) -> dict:
    """The allow-listed attributes of a header `ds` in `syntax_uid` (see DICOM_ALLOWED), JSON-ready,
    keys sorted."""
    out: dict = {}
    if standard_name(syntax_uid):
        out["TransferSyntaxUID"] = syntax_uid
    for keyword in _TOP_KEYWORDS:
        if keyword in ("TransferSyntaxUID", REGIONS) or keyword not in ds:
            continue
        v = _json_value(keyword, ds[keyword])
        if v is not None:
            out[keyword] = v
    if REGIONS in ds and ds[REGIONS].VR == "SQ":
        items = []
        for item in ds[REGIONS].value:
            kept = {}
            for keyword in _REGION_KEYWORDS:
                if keyword in item:
                    v = _json_value(keyword, item[keyword])
                    if v is not None:
                        kept[keyword] = v
            items.append(dict(sorted(kept.items())))
        out[REGIONS] = items
    return dict(sorted(out.items()))
