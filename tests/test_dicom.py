"""Tests of DICOM input (us4.media.dicom through us4.media.clips): every transfer syntax and
photometric interpretation on phantom files written here with real encoders, timing,
scanner regions, series, bad input, de-identification, and the two real files of
../shared/dicom when present."""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut
from pydicom.pixels.decoders.base import DecodeRunner

from us4.cli import main
from us4.media import (
    DICOM_ALLOWED, Box, ClipRef, MediaError, Region, allowed_table, decode_clip, find_clips, largest_tissue_region,
    probe_clip, to_grey,
)
from us4.media import dicom as dicom_mod
from us4.media.dicom import SYNTAXES
from us4.media.pixels import ycbcr_to_rgb
from us4.phantom import PLANTED_IDENTITY, phantom_layout, write_phantom_dicom

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "dicom"
SIZE = (64, 48)
N = 4


def real_or_skip(name: str) -> Path:
    p = REAL / name
    if not p.is_file():
        pytest.skip(f"real DICOM sample {name} not present in {REAL} (put the two files of ../shared/dicom "
                    "there: US-PAL-8-10x-echo.dcm and US1_RLE.dcm); skipping real-data test")
    return p


def ref(*files, fps=None) -> ClipRef:
    return ClipRef("dicom", tuple(str(f) for f in files), fps)


def phantom(tmp: Path, name: str, **kw) -> Path:
    args = dict(seed=3, n_frames=N, size=SIZE, text="X")
    args.update(kw)
    return write_phantom_dicom(tmp / name, **args)[0]


def edit(path: Path, **values) -> Path:
    """Rewrite a header in place (None deletes an attribute); the pixel data stay as they are."""
    ds = pydicom.dcmread(path)
    for k, v in values.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- every transfer syntax x photometric x bits ------------------------------

LOSSLESS_CASES = [
    (short, pi, bits)
    for short in ("raw-implicit-le", "raw-explicit-le", "raw-explicit-be", "raw-deflated", "rle")
    for pi, bits in (("MONOCHROME2", 8), ("MONOCHROME2", 12), ("MONOCHROME2", 16), ("MONOCHROME1", 8),
                     ("MONOCHROME1", 16), ("RGB", 8), ("RGB", 16), ("YBR_FULL", 8), ("PALETTE COLOR", 8))
] + [(s, "YBR_FULL_422", 8) for s in ("raw-implicit-le", "raw-explicit-le", "raw-explicit-be", "raw-deflated")] + [
    ("jpeg-ls", "MONOCHROME2", 8), ("jpeg-ls", "MONOCHROME2", 12), ("jpeg-ls", "MONOCHROME2", 16),
    ("jpeg-ls", "RGB", 8),
    ("jpeg2000-lossless", "MONOCHROME2", 8), ("jpeg2000-lossless", "MONOCHROME2", 16),
    ("jpeg2000-lossless", "RGB", 8), ("jpeg2000-lossless", "YBR_RCT", 8),
]
# (syntax, photometric, bits, bound on the mean absolute difference to the lossless file, in grey levels)
LOSSY_CASES = [
    ("jpeg-baseline", "MONOCHROME2", 8, 3.0), ("jpeg-baseline", "RGB", 8, 3.0),
    ("jpeg-baseline", "YBR_FULL", 8, 3.0), ("jpeg-baseline", "YBR_FULL_422", 8, 4.0),
    ("jpeg-extended", "MONOCHROME2", 8, 3.0), ("jpeg-extended", "YBR_FULL_422", 8, 4.0),
    ("jpeg-ls-near", "MONOCHROME2", 8, 2.0), ("jpeg-ls-near", "RGB", 8, 2.0),
    ("jpeg-ls-near", "MONOCHROME2", 12, 2.0),
    ("jpeg2000", "MONOCHROME2", 8, 15.0), ("jpeg2000", "MONOCHROME2", 16, 15.0), ("jpeg2000", "RGB", 8, 15.0),
    ("jpeg2000", "YBR_ICT", 8, 15.0),
]


def _reference(tmp: Path, pi: str, bits: int) -> list:
    """The same phantom, uncompressed: what a lossless file must decode to."""
    base = {"YBR_RCT": "RGB", "YBR_ICT": "RGB"}.get(pi, pi)
    p = phantom(tmp, f"ref-{base}-{bits}.dcm", transfer_syntax="raw-explicit-le", photometric=base, bits=bits)
    return decode_clip(ref(p), range(N))


def _uid(short: str) -> str:
    return next(u for u, s in SYNTAXES.items() if s.short == short)


def _check_info(info, short: str, pi: str, bits: int) -> None:
    assert (info.kind, info.container, info.codec, info.transfer_syntax) == ("dicom", "dicom", short, _uid(short))
    assert (info.photometric, info.bits, info.n_frames) == (pi, bits, N)
    assert (info.width, info.height) == SIZE and info.rotation == 0
    assert info.timing == "frame_time" and info.fps == pytest.approx(20.0) and info.duration == pytest.approx(0.2)
    json.dumps(info.to_dict())


@pytest.mark.parametrize("short,pi,bits", LOSSLESS_CASES)
def test_lossless_syntaxes_decode_exactly(tmp_path, short, pi, bits):
    path = phantom(tmp_path, "clip.dcm", transfer_syntax=short, photometric=pi, bits=bits)
    _check_info(probe_clip(ref(path)), short, pi, bits)
    frames = decode_clip(ref(path), [3, 1])
    assert [f.index for f in frames] == [1, 3]
    assert [f.pts for f in frames] == pytest.approx([0.05, 0.15])
    expected = _reference(tmp_path, pi, bits)
    colour = pi not in ("MONOCHROME1", "MONOCHROME2")
    for f in frames:
        assert f.grey.dtype == np.uint8 and f.grey.shape == (SIZE[1], SIZE[0])
        assert (f.rgb is not None) == colour
        if colour:
            assert f.rgb.shape == (SIZE[1], SIZE[0], 3) and f.rgb.dtype == np.uint8
            assert np.array_equal(f.grey, to_grey(f.rgb))
            assert np.array_equal(f.rgb, expected[f.index].rgb)
        assert np.array_equal(f.grey, expected[f.index].grey)


@pytest.mark.parametrize("short,pi,bits,bound", LOSSY_CASES)
def test_lossy_syntaxes_decode_close(tmp_path, short, pi, bits, bound):
    path = phantom(tmp_path, "clip.dcm", transfer_syntax=short, photometric=pi, bits=bits)
    _check_info(probe_clip(ref(path)), short, pi, bits)
    frames = decode_clip(ref(path), [0, 3])
    assert [f.index for f in frames] == [0, 3]
    expected = _reference(tmp_path, pi, bits)
    for f in frames:
        want = expected[f.index]
        diff = np.abs(f.grey.astype(int) - want.grey.astype(int))
        assert diff.mean() < bound, diff.mean()
        if short == "jpeg-ls-near":
            assert diff.max() <= 2  # within NEAR = 2 of every 8-bit sample (12-bit: far less)
        if want.rgb is not None:
            assert f.rgb is not None and np.abs(f.rgb.astype(int) - want.rgb.astype(int)).mean() < bound
    again = decode_clip(ref(path), [0, 3])
    assert all(np.array_equal(a.grey, b.grey) for a, b in zip(frames, again, strict=True))  # deterministic


# --- the pixel rules, checked against pydicom's own full decode ---------------

def test_grey_8bit_is_as_stored_and_monochrome1_is_inverted(tmp_path):
    m2 = phantom(tmp_path, "m2.dcm", transfer_syntax="raw-explicit-le", photometric="MONOCHROME2")
    m1 = phantom(tmp_path, "m1.dcm", transfer_syntax="raw-explicit-le", photometric="MONOCHROME1")
    stored2, stored1 = pydicom.dcmread(m2).pixel_array, pydicom.dcmread(m1).pixel_array
    assert not np.array_equal(stored1, stored2)  # MONOCHROME1 stores the inverse
    frames2, frames1 = decode_clip(ref(m2), range(N)), decode_clip(ref(m1), range(N))
    assert len(frames2) == len(frames1) == N
    for i, (a, b) in enumerate(zip(frames2, frames1, strict=True)):
        assert np.array_equal(a.grey, stored2[i])
        assert np.array_equal(b.grey, 255 - stored1[i])
        assert np.array_equal(a.grey, b.grey)


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_deep_grey_without_window_maps_the_bits_stored_range(tmp_path, bits):
    deep = phantom(tmp_path, "deep.dcm", transfer_syntax="raw-explicit-le", bits=bits)
    stored = pydicom.dcmread(deep).pixel_array.astype(np.int64)
    top = 2 ** bits - 1
    assert stored.max() > 255  # really deep
    frames = decode_clip(ref(deep), range(N))
    assert len(frames) == N
    for i, f in enumerate(frames):
        expected = np.vectorize(lambda v: int(Fraction(v * 255, top) + Fraction(1, 2)))(stored[i])
        assert np.array_equal(f.grey, expected)


def test_signed_deep_grey_maps_its_own_range(tmp_path):
    unsigned = phantom(tmp_path, "u.dcm", transfer_syntax="raw-explicit-le", bits=12)
    signed = tmp_path / "s.dcm"
    ds = pydicom.dcmread(unsigned)
    ds.PixelData = (ds.pixel_array.astype(np.int16) - 2048).astype("<i2").tobytes()
    ds.PixelRepresentation = 1
    ds.save_as(signed, enforce_file_format=True)
    assert pydicom.dcmread(signed).pixel_array.min() < 0
    frames_u, frames_s = decode_clip(ref(unsigned), range(N)), decode_clip(ref(signed), range(N))
    assert len(frames_u) == len(frames_s) == N
    for a, b in zip(frames_u, frames_s, strict=True):
        assert np.array_equal(a.grey, b.grey)  # -2048 is black, 2047 white


def _window_expected(x: int, c: Fraction, w: Fraction, exact: bool) -> int:
    """PS3.3 C.11.2.1.2 written out per value (LINEAR, LINEAR_EXACT), rounded half up."""
    if exact:
        y = ((x - c) / w + Fraction(1, 2)) * 255
    else:
        if x <= c - Fraction(1, 2) - (w - 1) / 2:
            return 0
        if x > c - Fraction(1, 2) + (w - 1) / 2:
            return 255
        y = ((x - (c - Fraction(1, 2))) / (w - 1) + Fraction(1, 2)) * 255
    return min(255, max(0, int(y + Fraction(1, 2)) if y >= 0 else 0))


@pytest.mark.parametrize("function,centre,width,slope,intercept", [
    ("LINEAR", "2047.5", "1000", "1", "0"),
    ("LINEAR", "1000", "1", "1", "0"),
    ("LINEAR_EXACT", "1800.25", "700.5", "1", "0"),
    ("LINEAR", "300", "2000", "0.5", "-100"),
])
def test_deep_grey_with_a_voi_window(tmp_path, function, centre, width, slope, intercept):
    path = phantom(tmp_path, "w.dcm", transfer_syntax="rle", bits=12)
    edit(path, WindowCenter=centre, WindowWidth=width, VOILUTFunction=function, RescaleSlope=slope,
         RescaleIntercept=intercept)
    stored = pydicom.dcmread(path).pixel_array.astype(np.int64)
    c, w, s, b = (Fraction(v) for v in (centre, width, slope, intercept))
    got = decode_clip(ref(path), [2])[0].grey
    expected = np.vectorize(lambda v: _window_expected(v * s + b, c, w, function == "LINEAR_EXACT"))(stored[2])
    assert np.array_equal(got, expected)
    assert 0 < got.mean() < 255


def test_8bit_grey_ignores_a_window(tmp_path):
    plain = phantom(tmp_path, "a.dcm", transfer_syntax="raw-explicit-le")
    windowed = phantom(tmp_path, "b.dcm", transfer_syntax="raw-explicit-le", window=(40.0, 20.0))
    assert np.array_equal(decode_clip(ref(plain), [1])[0].grey, decode_clip(ref(windowed), [1])[0].grey)


def test_palette_colour_matches_pydicom_lut(tmp_path):
    path = phantom(tmp_path, "pal.dcm", transfer_syntax="rle", photometric="PALETTE COLOR")
    ds = pydicom.dcmread(path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)  # 16-bit entries: high byte
    frames = decode_clip(ref(path), range(N))
    for i, f in enumerate(frames):
        assert np.array_equal(f.rgb, expected[i])
    assert any(((f.rgb[..., 0].astype(int) - f.rgb[..., 2]) > 100).any() for f in frames)  # the red blob


def test_ybr_full_is_integer_bt601(tmp_path):
    path = phantom(tmp_path, "ybr.dcm", transfer_syntax="raw-explicit-le", photometric="YBR_FULL")
    ds = pydicom.dcmread(path)
    stored = pydicom.pixels.pixel_array(path, raw=True)  # the YCbCr samples as stored
    as_pydicom = ds.pixel_array  # pydicom's float conversion
    for i, f in enumerate(decode_clip(ref(path), range(N))):
        assert np.array_equal(f.rgb, ycbcr_to_rgb(stored[i][..., 0], stored[i][..., 1], stored[i][..., 2], True))
        assert np.abs(f.rgb.astype(int) - as_pydicom[i].astype(int)).max() <= 1


def test_native_ybr_full_422_repeats_chroma(tmp_path):
    path = phantom(tmp_path, "422.dcm", transfer_syntax="raw-explicit-le", photometric="YBR_FULL_422")
    raw = np.frombuffer(pydicom.dcmread(path).PixelData, np.uint8).reshape(N, SIZE[1], SIZE[0] // 2, 4)
    for f in decode_clip(ref(path), [0, 2, 3]):
        q = raw[f.index]
        y = np.stack([q[..., 0], q[..., 1]], axis=-1).reshape(SIZE[1], SIZE[0])
        cb, cr = np.repeat(q[..., 2], 2, axis=1), np.repeat(q[..., 3], 2, axis=1)
        assert np.array_equal(f.rgb, ycbcr_to_rgb(y, cb, cr, True))


# --- timing -------------------------------------------------------------------

@pytest.fixture
def untimed(tmp_path) -> Path:
    return phantom(tmp_path, "untimed.dcm", transfer_syntax="rle", frame_time_ms=None)


@pytest.mark.parametrize("tags,source,fps,pts", [
    ({"FrameTime": "40", "FrameTimeVector": ["0", "10", "10", "10"], "CineRate": "10",
      "RecommendedDisplayFrameRate": "30"}, "frame_time", 25.0, [0, 0.04, 0.08, 0.12]),
    ({"FrameTimeVector": ["0", "40", "40", "80"], "CineRate": "10"}, "frame_time_vector", 3 / 0.16,
     [0, 0.04, 0.08, 0.16]),
    ({"FrameTime": "0", "FrameTimeVector": ["0", "40"], "CineRate": "10", "RecommendedDisplayFrameRate": "30"},
     "cine_rate", 10.0, [0, 0.1, 0.2, 0.3]),  # a zero Frame Time and a short vector count as absent
    ({"RecommendedDisplayFrameRate": "30"}, "recommended_display_frame_rate", 30.0, [0, 1 / 30, 2 / 30, 0.1]),
])
def test_timing_precedence(untimed, tags, source, fps, pts):
    edit(untimed, **tags)
    info = probe_clip(ref(untimed, fps=12))
    assert (info.timing, info.fps) == (source, pytest.approx(fps))
    assert [f.pts for f in decode_clip(ref(untimed, fps=12), range(N))] == pytest.approx(pts)


def test_timing_from_the_recipe_or_a_clear_error(untimed):
    info = probe_clip(ref(untimed, fps=12))
    assert (info.timing, info.fps, info.duration) == ("recipe", 12.0, pytest.approx(N / 12))
    assert decode_clip(ref(untimed, fps=12), [3])[0].pts == pytest.approx(0.25)
    for call in (lambda: probe_clip(ref(untimed)), lambda: decode_clip(ref(untimed), [0])):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.path == str(untimed)
        assert err.value.reason == "no frame timing in the file and none in the recipe"


def test_single_frame_needs_no_rate(tmp_path):
    files = write_phantom_dicom(tmp_path / "one", seed=1, n_frames=1, size=SIZE, frame_time_ms=None,
                                multi_frame=False)
    info = probe_clip(ref(*files))
    assert (info.n_frames, info.fps, info.timing, info.duration) == (1, 0.0, "none", 0.0)
    assert probe_clip(ref(*files, fps=8)).timing == "recipe"
    assert decode_clip(ref(*files), [0])[0].pts == 0.0


# --- regions, spacing, burned-in annotation -----------------------------------

def test_single_region_gives_box_and_spacing(tmp_path):
    path = phantom(tmp_path, "r.dcm", size=(96, 80))
    info = probe_clip(ref(path))
    (region,) = info.regions
    assert region.box == phantom_layout((96, 80), "sector", "X").scan
    assert (region.spatial_format, region.data_type, region.units) == (1, 1, (3, 3))
    assert region.spacing_mm == pytest.approx((0.2, 0.2)) and info.spacing_mm == pytest.approx((0.2, 0.2))
    assert largest_tissue_region(info.regions) == region
    d = json.loads(json.dumps(info.to_dict()))
    assert d["regions"][0]["box"] == {"x": region.box.x, "y": region.box.y, "w": region.box.w, "h": region.box.h}


def test_dual_view_has_two_regions(tmp_path):
    path = phantom(tmp_path, "dual.dcm", size=(128, 64), regions="dual")
    info = probe_clip(ref(path))
    left, right = info.regions
    assert left.box.x + left.box.w <= 64 <= right.box.x
    assert left.box.w == right.box.w and left.box.h == right.box.h
    assert largest_tissue_region(info.regions) == left  # equal areas: the first
    grey = decode_clip(ref(path), [0])[0].grey
    for r in (left, right):  # each region holds its own picture
        assert r.box.apply(grey).mean() > 10


def test_region_choice_and_units(tmp_path):
    regions = [
        Region(Box(0, 0, 64, 48), 2, 1, (3, 3), (0.01, 0.01), None),           # M-mode: never the crop
        Region(Box(4, 4, 30, 20), 1, 1, (3, 4), (0.05, 0.1), None),            # 2D, y in seconds: no spacing
        Region(Box(30, 10, 34, 38), 1, 2, (3, 3), (-0.03, 0.03), None),        # 2D colour flow, to the frame edge
    ]
    path = phantom(tmp_path, "c.dcm", regions=regions)
    info = probe_clip(ref(path))
    mmode, small, big = info.regions
    assert mmode.spatial_format == 2 and mmode.spacing_mm == pytest.approx((0.1, 0.1))
    assert small.spacing_mm is None
    assert big.box == Box(30, 10, 34, 38) and info.region_problems == ()  # as declared, inside the 64 x 48 frame
    assert big.spacing_mm == pytest.approx((0.3, 0.3))
    assert largest_tissue_region(info.regions) == big and info.spacing_mm == pytest.approx((0.3, 0.3))
    assert probe_clip(ref(phantom(tmp_path, "none.dcm", regions=None))).regions == ()


def test_burned_in_annotation_is_tri_state(tmp_path):
    assert probe_clip(ref(phantom(tmp_path, "t.dcm", text="JOHN"))).burned_in is True
    no = phantom(tmp_path, "n.dcm", text=None)
    assert probe_clip(ref(no)).burned_in is False
    assert probe_clip(ref(edit(no, BurnedInAnnotation=None))).burned_in is None


# --- series and finding clips -------------------------------------------------

def test_series_is_one_clip_ordered_by_instance_number(tmp_path):
    cine = phantom(tmp_path, "cine.dcm", n_frames=5)
    files = write_phantom_dicom(tmp_path / "series", seed=3, n_frames=5, size=SIZE, text="X", multi_frame=False)
    for i, f in enumerate(files):  # names now run against the frame order
        f.rename(f.with_name(f"{5 - i}.dcm"))
    (found,), others = find_clips("dicom", tmp_path / "series")
    assert others == [] and found.rel == "."
    assert [Path(f).name for f in found.files] == ["5.dcm", "4.dcm", "3.dcm", "2.dcm", "1.dcm"]
    info = probe_clip(found.ref)
    assert (info.n_frames, info.fps, info.timing) == (5, pytest.approx(20.0), "frame_time")
    whole = decode_clip(ref(cine), range(5))
    for f in decode_clip(found.ref, [1, 4]):
        assert np.array_equal(f.grey, whole[f.index].grey) and f.pts == pytest.approx(whole[f.index].pts)


def test_series_without_numbers_go_last_in_natural_order(tmp_path):
    files = write_phantom_dicom(tmp_path / "s", seed=3, n_frames=4, size=SIZE, multi_frame=False)
    edit(files[0], InstanceNumber=None)
    edit(files[2], InstanceNumber=None)
    files[0].rename(files[0].with_name("frame10.dcm"))
    files[2].rename(files[2].with_name("frame9.dcm"))
    (found,), _ = find_clips("dicom", tmp_path / "s")
    assert [Path(f).name for f in found.files] == ["IMG0002.dcm", "IMG0004.dcm", "frame9.dcm", "frame10.dcm"]


def test_find_clips_on_a_mixed_folder(tmp_path):
    root = tmp_path / "raw"
    phantom(root, "cine.dcm")
    write_phantom_dicom(root / "a", seed=4, n_frames=3, size=SIZE, multi_frame=False)
    # two series in one folder, a lone single frame, and a multi-frame file beside them
    write_phantom_dicom(root / "b", seed=5, n_frames=2, size=SIZE, multi_frame=False,
                        identity={"SeriesInstanceUID": "1.2.3.4.5"})
    for f in write_phantom_dicom(root / "tmp", seed=6, n_frames=2, size=SIZE, multi_frame=False,
                                 identity={"SeriesInstanceUID": "1.2.3.4.6"}):
        f.rename(root / "b" / f"x{f.name}")
    shutil.rmtree(root / "tmp")
    lone = write_phantom_dicom(root / "tmp", seed=7, n_frames=1, size=SIZE, multi_frame=False,
                               identity={"SeriesInstanceUID": "1.2.3.4.7"})[0]
    lone.rename(root / "b" / "lone.dcm")
    shutil.rmtree(root / "tmp")
    phantom(root / "b", "cine2.dcm", seed=8)
    _write_non_clips(root)
    found, others = find_clips("dicom", root)
    assert [(c.rel, len(c.files)) for c in found] == [
        ("a", 3), ("b/IMG0001.dcm", 2), ("b/cine2.dcm", 1), ("b/lone.dcm", 1), ("b/xIMG0001.dcm", 2),
        ("cine.dcm", 1)]
    assert all(Path(f).is_absolute() and c.ref.files == c.files and c.ref.kind == "dicom"
               for c in found for f in c.files)
    reasons = {o.rel: o.reason for o in others}
    assert reasons == {
        "DICOMDIR": "not an image: a DICOMDIR (media index)",
        "ct.dcm": "not an ultrasound image (CT Image Storage, modality CT)",
        "fake.dcm": "not DICOM (no DICM marker and no DICOM image header)",
        "notes.txt": "not DICOM (no DICM marker; suffix '.txt')",
        "report.dcm": "not an image: Comprehensive SR Storage without pixel data",
        "nopixels.dcm": "DICOM without pixel data",
    }
    for o in others:  # the CT and SR files carry planted identity: none of it in a reason
        assert not any(v in o.reason for v in PLANTED_IDENTITY.values())


def _write_non_clips(root: Path) -> dict[str, Path]:
    """A DICOMDIR, an SR, a CT image, a US file without pixel data, a text file, a fake .dcm,
    and hidden things; the DICOM ones carry planted identity."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}

    def save(name: str, ds: Dataset, sop: str) -> Path:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.9"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        p = root / name
        ds.save_as(p, enforce_file_format=True)
        out[name] = p
        return p

    def identified(sop: str) -> Dataset:
        ds = Dataset()
        for k, v in PLANTED_IDENTITY.items():
            if k != "Private":
                setattr(ds, k, v)
        ds.SOPClassUID = sop
        return ds

    d = Dataset()
    d.FileSetID = "PLANTED"
    d.DirectoryRecordSequence = pydicom.Sequence([])
    save("DICOMDIR", d, "1.2.840.10008.1.3.10")
    sr = identified("1.2.840.10008.5.1.4.1.1.88.33")
    sr.Modality = "SR"
    save("report.dcm", sr, sr.SOPClassUID)
    ct = identified("1.2.840.10008.5.1.4.1.1.2")
    ct.Modality, ct.Rows, ct.Columns, ct.SamplesPerPixel = "CT", 2, 2, 1
    ct.PhotometricInterpretation, ct.BitsAllocated, ct.BitsStored, ct.HighBit = "MONOCHROME2", 8, 8, 7
    ct.PixelRepresentation, ct.PixelData = 0, b"\0\1\2\3"
    save("ct.dcm", ct, ct.SOPClassUID)
    nop = identified("1.2.840.10008.5.1.4.1.1.6.1")
    nop.Modality = "US"
    save("nopixels.dcm", nop, nop.SOPClassUID)
    (root / "notes.txt").write_text("not a clip\n")
    out["notes.txt"] = root / "notes.txt"
    (root / "fake.dcm").write_bytes(b"\x00" * 40)
    out["fake.dcm"] = root / "fake.dcm"
    (root / ".hidden.dcm").write_bytes(b"hidden")
    (root / ".trash").mkdir()
    phantom(root / ".trash", "old.dcm")
    return out


def test_find_clips_rejects_bad_kinds_and_roots(tmp_path):
    phantom(tmp_path, "x.dcm")
    found, others = find_clips("dicom", tmp_path)
    assert [c.rel for c in found] == ["x.dcm"] and others == []
    with pytest.raises(ValueError, match="unknown input kind"):
        find_clips("tiff", tmp_path)
    with pytest.raises(NotADirectoryError):
        find_clips("dicom", tmp_path / "x.dcm")


def test_find_reads_headers_only(tmp_path, monkeypatch):
    path = phantom(tmp_path, "cut.dcm", transfer_syntax="rle")
    path.write_bytes(path.read_bytes()[:-300])  # a broken pixel stream does not hide the clip
    calls = []
    monkeypatch.setattr(DecodeRunner, "decode", lambda self, index: calls.append(index))
    (found,), _ = find_clips("dicom", tmp_path)
    assert found.rel == "cut.dcm" and calls == []
    with pytest.raises(MediaError, match="truncated pixel data"):
        probe_clip(found.ref)


# --- decoding only what is wanted ---------------------------------------------

@pytest.mark.parametrize("short", ["rle", "jpeg-baseline", "jpeg2000-lossless"])
def test_decode_only_the_wanted_frames(tmp_path, monkeypatch, short):
    path = phantom(tmp_path, "long.dcm", n_frames=12, transfer_syntax=short)
    decoded = []
    original = DecodeRunner.decode

    def counting(self, index):
        decoded.append(index)
        return original(self, index)

    monkeypatch.setattr(DecodeRunner, "decode", counting)
    assert [f.index for f in decode_clip(ref(path), [5, 2, 5])] == [2, 5]
    assert decoded == [2, 5]
    decoded.clear()
    assert decode_clip(ref(path), [10, 40]) and decoded == [10]  # past the end: left out
    decoded.clear()
    assert decode_clip(ref(path), []) == [] and decoded == []
    with pytest.raises(MediaError, match="none of the wanted indices"):
        decode_clip(ref(path), [12])


def test_native_decode_reads_only_the_wanted_frames(tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    path = phantom(tmp_path, "raw.dcm", n_frames=12, transfer_syntax="raw-explicit-le")
    seen = []
    original = Decoder._as_array_native

    def counting(runner, index):
        seen.append(index)
        return original(runner, index)

    monkeypatch.setattr(Decoder, "_as_array_native", staticmethod(counting))
    decode_clip(ref(path), [3, 7])
    assert seen == [3, 7]


def test_series_decode_reads_only_the_wanted_files(tmp_path, monkeypatch):
    files = write_phantom_dicom(tmp_path / "s", seed=2, n_frames=10, size=SIZE, multi_frame=False)
    read = []
    original = dicom_mod.header.read_header
    monkeypatch.setattr(dicom_mod.header, "read_header", lambda p: read.append(Path(p).name) or original(p))
    frames = decode_clip(ref(*files), [6])
    assert [f.index for f in frames] == [6] and read == ["IMG0001.dcm", "IMG0007.dcm"]


# --- bad input ----------------------------------------------------------------

def _bad_files(tmp: Path) -> dict[str, tuple[list[Path], str]]:
    """Every broken input, with planted identity in its header: (files, expected reason start)."""
    idn = PLANTED_IDENTITY
    out: dict[str, tuple[list[Path], str]] = {}
    extra = _write_non_clips(tmp / "other")
    out["not_dicom"] = ([extra["notes.txt"]], "not DICOM (no DICM marker")
    out["garbage"] = ([extra["fake.dcm"]], "not DICOM (no DICM marker and no DICOM image header)")
    out["no_pixels"] = ([extra["nopixels.dcm"]], "DICOM without pixel data")
    out["sr"] = ([extra["report.dcm"]], "not an image: Comprehensive SR Storage")
    out["dicomdir"] = ([extra["DICOMDIR"]], "not an image: a DICOMDIR")
    out["ct"] = ([extra["ct.dcm"]], "not an ultrasound image (CT Image Storage")

    p = phantom(tmp, "mpeg.dcm", transfer_syntax="jpeg-baseline", identity=idn)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"
    ds.save_as(p, enforce_file_format=True)
    out["mpeg4"] = ([p], "unsupported transfer syntax MPEG-4 AVC/H.264 High Profile / Level 4.1: "
                         "no pydicom decoder exists for it")
    p = phantom(tmp, "lossless.dcm", transfer_syntax="jpeg-baseline", identity=idn)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
    ds.save_as(p, enforce_file_format=True)
    out["sv1"] = ([p], "unsupported transfer syntax JPEG Lossless, Non-Hierarchical, First-Order Prediction "
                       "(Process 14 [Selection Value 1]): not verified by us4 (installed plugin pylibjpeg")
    out["hsv"] = ([edit(phantom(tmp, "hsv.dcm", photometric="RGB", identity=idn), PhotometricInterpretation="HSV")],
                  "unsupported photometric interpretation (HSV); us4 reads")
    out["pi_text"] = ([edit(phantom(tmp, "pit.dcm", identity=idn), PhotometricInterpretation="PLANTEDDOE")],
                      "unsupported photometric interpretation (not a DICOM defined term)")
    out["bits32"] = ([edit(phantom(tmp, "b32.dcm", transfer_syntax="raw-explicit-le", identity=idn),
                           BitsAllocated=32, BitsStored=32, HighBit=31)], "unsupported bit depth (Bits Allocated 32")

    raw = phantom(tmp, "raw_cut.dcm", transfer_syntax="raw-explicit-le", identity=idn)
    raw.write_bytes(raw.read_bytes()[:-1000])
    out["raw_truncated"] = ([raw], "truncated pixel data: the file ends ")
    rle = phantom(tmp, "rle_cut.dcm", transfer_syntax="rle", identity=idn)
    rle.write_bytes(rle.read_bytes()[:-500])
    out["rle_truncated"] = ([rle], "truncated pixel data: the file ends inside fragment 4")
    out["raw_more_frames"] = ([edit(phantom(tmp, "m.dcm", transfer_syntax="raw-explicit-le", identity=idn),
                                    NumberOfFrames=6)], "Number of Frames says 6, the pixel data holds only 4")
    out["raw_fewer_frames"] = ([edit(phantom(tmp, "f.dcm", transfer_syntax="raw-explicit-le", identity=idn),
                                     NumberOfFrames=2)], "Number of Frames says 2, the pixel data holds 4")
    out["rle_frames"] = ([edit(phantom(tmp, "rf.dcm", transfer_syntax="rle", identity=idn), NumberOfFrames=6)],
                         "Number of Frames says 6, the offset table lists 4")
    nobot = phantom(tmp, "nobot.dcm", transfer_syntax="rle", identity=idn)
    ds = pydicom.dcmread(nobot)
    frames = [f for f in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=N)]
    ds.PixelData = encapsulate(frames, has_bot=False)
    ds.NumberOfFrames = 3
    ds.save_as(nobot, enforce_file_format=True)
    out["rle_fragments"] = ([nobot], "Number of Frames says 3, the RLE pixel data holds 4 frames")
    corrupt = phantom(tmp, "corrupt.dcm", transfer_syntax="rle", identity=idn)
    ds = pydicom.dcmread(corrupt)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=N))
    frames[1] = b"\xff" * len(frames[1])  # an impossible RLE header in frame 1
    ds.PixelData = encapsulate(frames)
    ds.save_as(corrupt, enforce_file_format=True)
    out["corrupt_frame"] = ([corrupt], "cannot decode frame 1 (pydicom): ")

    mixed = write_phantom_dicom(tmp / "mixed", seed=1, n_frames=3, size=SIZE, multi_frame=False, identity=idn)
    other = write_phantom_dicom(tmp / "other_size", seed=1, n_frames=1, size=(48, 48), multi_frame=False,
                                identity=idn)[0]
    shutil.copy(other, mixed[2])
    out["mixed_sizes"] = (mixed, "mixed sizes in one series: 48x48, the first file is 64x48")
    return out


def test_bad_input_is_a_media_error_naming_file_and_cause(tmp_path):
    for key, (files, reason) in _bad_files(tmp_path).items():
        calls = [lambda: decode_clip(ref(*files), [0, 1, 2])]
        if key == "corrupt_frame":  # the header is sound: probing passes, decoding finds it
            assert probe_clip(ref(*files)).n_frames == N
        else:
            calls.append(lambda: probe_clip(ref(*files)))
        for call in calls:
            with pytest.raises(MediaError) as info:
                call()
            err = info.value
            at_fault = files[-1] if key == "mixed_sizes" else files[0]
            assert err.path == str(at_fault), key
            assert err.reason.startswith(reason), (key, err.reason)
            assert not any(v in err.reason for v in PLANTED_IDENTITY.values()), (key, err.reason)


# --- de-identification --------------------------------------------------------

@pytest.mark.parametrize("short,pi,multi", [("rle", "PALETTE COLOR", True), ("jpeg-baseline", "YBR_FULL_422", True),
                                            ("raw-explicit-be", "MONOCHROME2", True), ("raw-implicit-le", "RGB", False),
                                            ("jpeg2000-lossless", "YBR_RCT", True)])
def test_no_planted_identity_reaches_clip_info(tmp_path, short, pi, multi):
    files = write_phantom_dicom(tmp_path / ("clip.dcm" if multi else "series"), seed=1, n_frames=3, size=SIZE,
                                transfer_syntax=short, photometric=pi, identity=PLANTED_IDENTITY,
                                text="PLANTEDDOE JANE", multi_frame=multi)
    raw = b"".join(f.read_bytes() for f in files)
    assert all(v.encode() in raw for v in PLANTED_IDENTITY.values())  # planted, in every class of tag
    info = probe_clip(ref(*files))
    d = info.to_dict()
    del d["path"]  # a local path: never written to a release (see ClipInfo)
    text = json.dumps(d)
    leaked = [v for v in PLANTED_IDENTITY.values() if v in text]
    assert leaked == []
    allowed = {a.keyword for a in DICOM_ALLOWED}
    assert set(info.attributes) <= allowed
    for item in info.attributes.get("SequenceOfUltrasoundRegions", []):
        assert set(item) <= allowed
    assert info.attributes["PhotometricInterpretation"] == pi and info.attributes["Modality"] == "US"


def test_allow_list_is_printable_and_holds_no_identifying_attribute():
    keywords = {a.keyword for a in DICOM_ALLOWED}
    for never in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "OperatorsName",
                  "ReferringPhysicianName", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                  "SOPInstanceUID", "StudyDate", "StudyTime", "StationName", "DeviceSerialNumber",
                  "Manufacturer", "ManufacturerModelName", "ImageComments"):
        assert never not in keywords
    table = allowed_table()
    assert table.startswith("| tag | attribute |") and all(f"| {a.keyword} |" in table for a in DICOM_ALLOWED)
    for a in DICOM_ALLOWED:  # every entry is a real attribute with its real tag
        tag = pydicom.datadict.tag_for_keyword(a.keyword)
        assert a.tag == f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def test_header_values_outside_the_allow_list_are_dropped(tmp_path):
    # free text in allow-listed fields, and a private SOP class, must not pass either
    path = edit(phantom(tmp_path, "odd.dcm", identity=PLANTED_IDENTITY), BurnedInAnnotation="PLANTEDDOE",
                VOILUTFunction="PLANTEDDOE")
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = "1.2.826.0.1.3680043.10.9471.77"  # a private class; the file counts as US by modality
    ds.save_as(path, enforce_file_format=True)
    info = probe_clip(ref(path))
    assert "SOPClassUID" not in info.attributes and "BurnedInAnnotation" not in info.attributes
    assert "VOILUTFunction" not in info.attributes and info.burned_in is None
    assert "PLANTEDDOE" not in json.dumps(info.to_dict())


# --- phantoms -----------------------------------------------------------------

@pytest.mark.parametrize("short,pi", [("rle", "PALETTE COLOR"), ("jpeg-baseline", "YBR_FULL_422"),
                                      ("jpeg-ls", "MONOCHROME2"), ("jpeg2000", "YBR_ICT"), ("raw-deflated", "RGB")])
def test_phantom_dicom_is_deterministic(tmp_path, short, pi):
    def write(name, seed):
        return phantom(tmp_path, name, seed=seed, transfer_syntax=short, photometric=pi,
                       identity=PLANTED_IDENTITY).read_bytes()
    a = write("a.dcm", 1)
    assert a == write("b.dcm", 1) and a != write("c.dcm", 2)


def test_phantom_dicom_rejects_what_it_cannot_write(tmp_path):
    for kw in ({"transfer_syntax": "jpeg-baseline", "photometric": "PALETTE COLOR"},
               {"transfer_syntax": "jpeg-baseline", "bits": 12}, {"transfer_syntax": "mpeg"},
               {"photometric": "YBR_FULL", "bits": 16}, {"regions": "dual", "size": (66, 48)}):
        with pytest.raises(ValueError):
            phantom(tmp_path, "x.dcm", **kw)


# --- us4 probe ----------------------------------------------------------------

def test_cli_probe_shows_dicom_and_sequences(tmp_path):
    from us4.phantom import write_phantom_sequence

    root = tmp_path / "raw"
    cine = phantom(root, "cine.dcm", transfer_syntax="jpeg-baseline")
    write_phantom_dicom(root / "series", seed=2, n_frames=3, size=SIZE, multi_frame=False, frame_time_ms=None)
    write_phantom_sequence(root / "seq", seed=1, n_frames=5, size=SIZE)
    _write_non_clips(root)
    runner = CliRunner()
    res = runner.invoke(main, ["probe", "--fps", "10", str(root)])
    lines = res.output.splitlines()
    assert lines[0].split()[-3:] == ["transfer", "syntax", "problem"]
    row = {line.split()[0]: line for line in lines[2:] if line.strip() and not line.startswith(" ")}
    assert "JPEG Baseline (Process 1)" in row[str(cine)] and " 20 " in row[str(cine)]
    assert "dicom" in row[str(root / "series")] and " 10 " in row[str(root / "series")]  # the --fps rate
    assert "image_sequence" in row[str(root / "seq")] and "png" in row[str(root / "seq")]
    assert "not an image: a DICOMDIR" in row[str(root / "DICOMDIR")]
    assert "DICOM without pixel data" in row[str(root / "nopixels.dcm")]
    assert str(root / "notes.txt") not in res.output  # not DICOM-looking, not a clip: not listed
    assert res.exit_code == 0, res.output  # DICOM files that are no clips are listed, not failures
    assert "5 DICOM files are no clips" in res.output
    one = runner.invoke(main, ["probe", str(cine)])
    assert one.exit_code == 0, one.output
    no_rate = runner.invoke(main, ["probe", str(root / "seq")])
    assert no_rate.exit_code == 1 and "no frame rate" in no_rate.output


# --- the real files -----------------------------------------------------------

def test_real_palette_echo_cine():
    path = real_or_skip("US-PAL-8-10x-echo.dcm")
    info = probe_clip(ref(path))
    assert (info.n_frames, info.width, info.height, info.codec, info.photometric) == (10, 600, 430, "rle",
                                                                                      "PALETTE COLOR")
    assert info.timing == "frame_time" and info.fps == pytest.approx(1000 / 76)
    frames = decode_clip(ref(path), range(10))
    ds = pydicom.dcmread(path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)
    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == pytest.approx([i * 0.076 for i in range(10)])
    for f in frames:
        assert np.array_equal(f.rgb, expected[f.index]) and np.array_equal(f.grey, to_grey(f.rgb))
    _assert_no_header_text(info, ds)


def test_real_rgb_single_frame():
    path = real_or_skip("US1_RLE.dcm")
    info = probe_clip(ref(path))
    assert (info.n_frames, info.width, info.height, info.photometric, info.timing, info.fps) == (
        1, 640, 480, "RGB", "none", 0.0)
    (frame,) = decode_clip(ref(path), [0])
    ds = pydicom.dcmread(path)
    assert np.array_equal(frame.rgb, ds.pixel_array) and frame.pts == 0.0
    _assert_no_header_text(info, ds)


def _assert_no_header_text(info, ds) -> None:
    """No text value of the file outside the allow-list appears in ClipInfo (path aside)."""
    allowed = {a.keyword for a in DICOM_ALLOWED}
    d = info.to_dict()
    del d["path"]
    text = json.dumps(d)
    values = []
    for elem in ds.iterall():
        if elem.keyword not in allowed and elem.VR in ("PN", "LO", "SH", "DA", "TM", "DT", "UI", "ST", "LT", "CS"):
            v = str(elem.value).strip()
            standard = elem.VR == "UI" and pydicom.uid.UID(v).name != v  # e.g. a referenced SOP class
            if len(v) >= 4 and not standard:
                values.append(v)
    assert values and [v for v in values if v in text] == []
