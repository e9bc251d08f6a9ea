"""Tests of us4.media.text: burned-in text found on phantom clips (planted text with known
boxes) and on the real DICOM files in ../shared/dicom, and painted out for good."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from us4.media import Box, decode
from us4.media import text as text_mod
from us4.media.text import (
    GRID, TextBox, TextEngineMissing, detect_text, frames_to_check, mask_text, text_engine_versions,
)
from us4.phantom import phantom_layout, write_phantom_clip

REPO = Path(__file__).resolve().parents[1]
DICOM = REPO.parent / "shared" / "dicom"
SIZE = (224, 192)

try:
    import rapidocr  # noqa: F401
    HAVE_ENGINE = True
except ImportError:
    HAVE_ENGINE = False
needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="rapidocr not installed: pip install 'us4[text]' "
                                                          "to run the text detection tests")

# The acceptance check's reader of identifying text (../shared/acceptance/dicom.sh), verbatim.
IDENTIFYING = re.compile(r"(MED|MEDICAL|HOSPITAL|CTR|CENTER|CLINIC|INFIRMARY|WESTWAY|BAPTIST)|"
                         r"\b\d{1,2}[ -/.]?(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*[ -/.]?\d{2,4}\b|"
                         r"\b\d{1,2}:\d{2}:\d{2}\b", re.I)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=120)


def _contains(outer: Box, inner: Box) -> bool:
    return (outer.x <= inner.x and outer.y <= inner.y
            and outer.x + outer.w >= inner.x + inner.w and outer.y + outer.h >= inner.y + inner.h)


def _grow(b: Box, d: int) -> Box:
    return Box(b.x - d, b.y - d, b.w + 2 * d, b.h + 2 * d)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """The checked frames (first, middle, last) of a 20-frame sector phantom, with and without text."""
    d = tmp_path_factory.mktemp("text")
    out = {}
    for name, text in (("text", "US4 PHANTOM 12cm"), ("blank", None)):
        p = d / f"{name}.mp4"
        write_phantom_clip(p, seed=5, n_frames=20, size=SIZE, text=text)
        out[name] = [f.grey for f in decode(p, frames_to_check(20))]
    return out


# --- no engine needed ---------------------------------------------------------


def test_frames_to_check_are_first_middle_last():
    assert frames_to_check(1) == [0]
    assert frames_to_check(2) == [0, 1]
    assert frames_to_check(10) == [0, 5, 9]
    assert frames_to_check(301) == [0, 150, 300]
    with pytest.raises(ValueError):
        frames_to_check(0)


@pytest.mark.parametrize("shape", [(40, 60), (40, 60, 3)])
def test_mask_text_paints_boxes_black_in_a_copy(shape):
    rng = np.random.default_rng(0)
    frame = rng.integers(1, 256, size=shape, dtype=np.uint8)
    before = frame.copy()
    boxes = [TextBox(8, 4, 16, 8, "A", 0.9, 0.8), TextBox(50, 32, 24, 16, "B", 0.9, 0.8)]  # the second runs off
    out = mask_text(frame, boxes)
    assert np.array_equal(frame, before)  # the input is left alone
    painted = np.zeros(shape[:2], bool)
    painted[4:12, 8:24] = True
    painted[32:40, 50:60] = True
    assert not out[painted].any()
    assert np.array_equal(out[~painted], frame[~painted])
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.array_equal(mask_text(frame, [b.box for b in boxes]), out)  # plain Boxes work too
    assert np.array_equal(mask_text(frame, []), frame)


def test_boxes_of_different_frames_that_overlap_or_touch_become_one():
    # (edges x0, y0, x1, y1; text read; its score; detection score), as three frames found them
    found = [((16, 8, 40, 24), "30 JAN", 0.9, 0.80), ((40, 8, 64, 24), "94", 0.7, 0.85),  # touching
             ((56, 16, 72, 32), "11:24", 0.8, 0.70),                                      # overlaps the 2nd
             ((16, 8, 40, 24), "30 JAN", 0.95, 0.75),                                     # the 1st, again
             ((100, 80, 120, 96), "", 0.0, 0.90)]                                         # alone, unread
    merged = text_mod._merge(found)
    assert merged == [TextBox(16, 8, 56, 24, "30 JAN 94 11:24", 0.95, 0.85), TextBox(100, 80, 20, 16, "", 0.0, 0.9)]
    assert text_mod._merge(found[::-1]) == merged
    assert text_mod._merge([]) == []


def test_importing_media_does_not_import_the_engine():
    res = _run("""
        import sys, us4.media, us4.media.text
        print(sorted(m for m in ("rapidocr", "onnxruntime", "cv2") if m in sys.modules))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_detect_text_without_rapidocr_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # what an environment without it sees
    monkeypatch.setattr(text_mod, "_ENGINE", None)
    with pytest.raises(TextEngineMissing, match=re.escape("pip install 'us4[text]'")):
        detect_text([np.zeros((64, 64), np.uint8)])


# --- phantom clips ------------------------------------------------------------


@needs_engine
def test_planted_text_is_covered_and_nothing_else_is_found(phantom):
    found = detect_text(phantom["text"])
    planted = phantom_layout(SIZE, "sector", "US4 PHANTOM 12cm").text[:2]  # title, clock (not the scale bar)
    assert len(found) == 2, found
    for want in planted:
        hits = [b for b in found if _contains(b.box, want)]
        assert len(hits) == 1, (want, found)
        # and tight: at most the detector's outline of the glyphs, the margin and the grid beyond it
        assert _contains(_grow(want, 2 * GRID), hits[0].box), (want, hits[0])
    title, clock = sorted(found, key=lambda b: b.x)
    assert "PHANTOM" in title.text.replace(" ", "") and clock.text == "12:34"
    assert all(b.det_score >= text_mod.DET_THRESHOLD for b in found)
    # snapped outward to the grid, except where clipped at the frame's edge
    for b in found:
        assert b.x % GRID == 0 and b.y % GRID == 0
        assert (b.x + b.w) % GRID == 0 or b.x + b.w == SIZE[0]
        assert (b.y + b.h) % GRID == 0 or b.y + b.h == SIZE[1]


@needs_engine
def test_a_frame_without_text_gives_nothing(phantom):
    assert detect_text(phantom["blank"]) == []


@needs_engine
def test_detection_inside_a_box_maps_back_to_the_frame(phantom):
    clock = phantom_layout(SIZE, "sector", "US4 PHANTOM 12cm").text[1]
    region = Box(150, 0, SIZE[0] - 150, 40)  # the top-right corner: the clock and nothing of the title
    found = detect_text(phantom["text"], region)
    assert len(found) == 1 and found[0].text == "12:34"
    assert _contains(found[0].box, clock)
    assert _contains(region, found[0].box)
    whole = [b for b in detect_text(phantom["text"]) if b.text == "12:34"]
    assert found[0].box == whole[0].box  # frame-anchored grid: the same box either way


@needs_engine
def test_masked_text_is_not_found_again(phantom):
    found = detect_text(phantom["text"])
    masked = [mask_text(f, found) for f in phantom["text"]]
    assert detect_text(masked) == []
    # the text was painted, not the picture: the padded boxes touch the fan's top corners only
    scan = phantom_layout(SIZE, "sector", "US4 PHANTOM 12cm").mask
    for m, f in zip(masked, phantom["text"], strict=True):
        changed = m != f
        assert np.count_nonzero(changed & scan) < 0.01 * np.count_nonzero(scan)
        assert np.count_nonzero(changed & ~scan) > 0


@needs_engine
def test_boxes_are_the_same_on_every_run_and_in_a_fresh_process(phantom, tmp_path):
    first = detect_text(phantom["text"])
    assert detect_text(phantom["text"]) == first
    assert detect_text(list(reversed(phantom["text"]))) == first  # frame order does not matter
    np.save(tmp_path / "frames.npy", np.stack(phantom["text"]))
    res = _run(f"""
        import json, dataclasses, numpy as np
        from us4.media.text import detect_text
        print(json.dumps([dataclasses.asdict(b) for b in detect_text(list(np.load({str(tmp_path / 'frames.npy')!r})))]))
    """)
    assert res.returncode == 0, res.stderr
    assert [TextBox(**b) for b in json.loads(res.stdout)] == first


@needs_engine
def test_one_engine_per_process_with_one_thread():
    engine = text_mod._engine()
    assert text_mod._engine() is engine
    opts = engine.det.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert engine.det.get_providers() == ["CPUExecutionProvider"]


@needs_engine
def test_engine_versions_name_the_libraries_and_models():
    v = text_engine_versions()
    from importlib.metadata import version
    assert v["rapidocr"] == version("rapidocr") and v["onnxruntime"] == version("onnxruntime")
    assert re.fullmatch(r"PP-OCRv\d+_det_\w+\.onnx sha256:[0-9a-f]{64}", v["det_model"])
    assert re.fullmatch(r"PP-OCRv\d+_rec_\w+\.onnx sha256:[0-9a-f]{64}", v["rec_model"])
    assert f"det>={text_mod.DET_THRESHOLD}" in v["settings"] and f"grid={GRID}" in v["settings"]


@needs_engine
def test_detection_never_touches_the_network(tmp_path, phantom):
    np.save(tmp_path / "frame.npy", phantom["text"][0])
    res = _run(f"""
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args[:2])
            raise OSError("network access during text detection")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse
        import numpy as np
        from us4.media.text import detect_text, text_engine_versions
        boxes = detect_text([np.load({str(tmp_path / 'frame.npy')!r})])
        text_engine_versions()
        print(len(boxes), len(attempts))
    """, HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2", "0"]


# --- the real DICOM files -----------------------------------------------------


def _dicom_frames(name: str) -> list[np.ndarray]:
    path = DICOM / name
    if not path.is_file():
        pytest.skip(f"real DICOM sample not present at {DICOM} (put {name} there: see ../shared/dicom/README.md)")
    pydicom = pytest.importorskip("pydicom")
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:  # 16-bit palette entries: keep the top byte
            arr = (arr >> 8).astype(np.uint8)
    return list(arr) if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else [arr]


@needs_engine
@pytest.mark.parametrize("name, planted", [("US1_RLE.dcm", "BAPTIST MED CTR"),
                                           ("US-PAL-8-10x-echo.dcm", "30 JAN 94")])
@pytest.mark.slow
def test_real_dicom_text_is_found_and_masked_until_unreadable(name, planted):
    import logging

    from rapidocr import RapidOCR

    frames = _dicom_frames(name)
    found = detect_text([frames[i] for i in frames_to_check(len(frames))])
    assert any(planted in b.text for b in found), found
    reader = RapidOCR(params={"Global.log_level": "error"})  # the acceptance check's reader, as it runs it
    logging.disable(logging.WARNING)
    try:
        before = [t for f in frames for t in (reader(f).txts or ()) if IDENTIFYING.search(t)]
        after = [t for f in frames for t in (reader(mask_text(f, found)).txts or ()) if IDENTIFYING.search(t)]
    finally:
        logging.disable(logging.NOTSET)
    assert len(before) >= len(frames)  # the reader does see the identity before masking ...
    assert after == []                 # ... and nothing of it afterwards, on any frame
