"""Burned-in text: find it in a clip's frames with an offline detector, and paint it out.

Detection runs the DB text detector that rapidocr ships in its wheel (PP-OCRv6 small,
ONNX) through onnxruntime on the CPU, with rapidocr's DB post-processing; rapidocr's
recogniser then reads each box (for the audit report only: whether there is text is
decided on detection). The detector session is ours rather than rapidocr's pipeline
because rapidocr 3.10 sorts the boxes without their scores (its scores do not belong
to its boxes) and picks providers and thread counts from the machine. Nothing is
fetched at run time: both models are opened from the installed wheel by path, which
skips rapidocr's download step, and the recogniser reads its characters from the model.

Frames are upscaled so that the shorter side is at least `DET_SIDE` (Pillow's integer
bilinear resize, to sizes that are multiples of 32). The boxes come from float
inference, so an edge could move by a pixel between CPUs; released pixels must not.
Each box is padded by `MARGIN` pixels and snapped outward to a `GRID`-pixel grid
anchored at the frame's top-left corner, then clipped to the searched region: an edge
then moves only when float noise carries a raw edge across a rounding boundary that
also sits on a grid line.

rapidocr and onnxruntime are the optional extra `us4[text]`: importing this module
imports neither; the engine is built on first use, once per process, one thread.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import Us4Error
from .types import Box

__all__ = ["DET_THRESHOLD", "GRID", "MARGIN", "MAX_LINE", "TextBox", "TextEngineMissing", "detect_text",
           "frames_to_check", "mask_text", "text_engine_versions"]

#: A detection counts as text when the mean text probability inside its box reaches this.
#: Measured with the settings below: text lines of the two real DICOM files and of phantom
#: clips 0.72-0.88; line-shaped candidates that are not text at most 0.57 (a colour-Doppler
#: blob in US1_RLE.dcm); on the 62 convex POCUS clips speckle at most 0.38 and a faint depth
#: label "0" 0.39-0.42 (missed: it identifies no one) ...
DET_THRESHOLD = 0.65
#: ... and its thickness (the shorter side of its box) is at most this share of the frame's
#: shorter side: text lines measured 3.7-7.3 %, while anatomy that scored 0.5 to 0.74 (in 41
#: of the 62 POCUS clips) was at least 33 % thick.
MAX_LINE = Fraction(1, 8)
#: Pixels added on every side of a detected box before snapping (covers anti-aliased glyph edges).
MARGIN = 4
#: Box edges are snapped outward to multiples of this many pixels (in full-frame coordinates).
GRID = 8
#: Frames whose shorter side is below this are upscaled to it for detection (the model's
#: default; the DICOM files found the same lines at 736 to 1088, 736 being the fastest).
DET_SIDE = 736
#: ... and no frame is run larger than this on its longer side.
DET_MAX_SIDE = 2560

_DET_MODEL = "PP-OCRv6_det_small.onnx"
_REC_MODEL = "PP-OCRv6_rec_small.onnx"
# DB post-processing: pixel probability threshold, box expansion, as rapidocr's defaults.
_PIXEL_THRESHOLD = 0.3
_UNCLIP = 1.6


class TextEngineMissing(Us4Error):
    """The text detector (rapidocr + onnxruntime) is not installed."""


@dataclass(frozen=True)
class TextBox:
    """A region of burned-in text in full-frame pixels: top-left (x, y), width w, height h.

    `text` is what the recogniser read (distinct readings of merged boxes joined by a
    space, in reading order) and `score` its confidence; `det_score` is the detector's
    mean text probability, the figure compared with `DET_THRESHOLD`. Both scores are
    the highest among the merged detections. They come from float inference: use them
    in reports, not in anything hashed.
    """

    x: int
    y: int
    w: int
    h: int
    text: str
    score: float
    det_score: float = 0.0

    @property
    def box(self) -> Box:
        return Box(self.x, self.y, self.w, self.h)


def frames_to_check(n: int) -> list[int]:
    """Indices of the frames of an n-frame clip to run the detector on: first, middle, last."""
    if n < 1:
        raise ValueError(f"a clip has at least one frame, got n={n}")
    return sorted({0, n // 2, n - 1})


class _Engine:
    """The detector session, its DB post-processing and the recogniser; one per process."""

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
            import rapidocr
            from rapidocr import RapidOCR
            from rapidocr.ch_ppocr_det.utils import DBPostProcess
        except ImportError as exc:
            raise TextEngineMissing(
                f"burned-in text detection needs rapidocr and onnxruntime ({exc}); "
                "install them with: pip install 'us4[text]'") from exc
        models = Path(rapidocr.__file__).resolve().parent / "models"
        det_path, rec_path = models / _DET_MODEL, models / _REC_MODEL
        for p in (det_path, rec_path):
            if not p.is_file():
                raise TextEngineMissing(f"{p}: model file missing from the rapidocr wheel; "
                                        "reinstall with: pip install --force-reinstall 'us4[text]'")
        opts = ort.SessionOptions()
        # One thread: builds run one process per core, and the result must not depend on cores.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.det = ort.InferenceSession(str(det_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.det_input = self.det.get_inputs()[0].name
        # Candidates down to the pixel threshold; DET_THRESHOLD is applied by detect_text.
        self.post = DBPostProcess(thresh=_PIXEL_THRESHOLD, box_thresh=_PIXEL_THRESHOLD, max_candidates=1000,
                                  unclip_ratio=_UNCLIP, score_mode="fast", use_dilation=True)
        # An explicit model path skips rapidocr's download step; the CPU provider only.
        self.rec = RapidOCR(params={
            "Global.log_level": "error",
            "Global.use_det": False, "Global.use_cls": False, "Global.use_rec": True,
            "Rec.model_path": str(rec_path),
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def detect(self, bgr: np.ndarray, scale: Fraction) -> list[tuple[np.ndarray, float]]:
        """Quadrilaterals (4 x 2, region pixels) and mean text probabilities of every candidate."""
        h, w = bgr.shape[:2]
        th, tw = _det_size(h, scale), _det_size(w, scale)
        img = bgr if (th, tw) == (h, w) else np.asarray(
            Image.fromarray(bgr).resize((tw, th), Image.Resampling.BILINEAR))
        x = (img.astype(np.float32) * np.float32(2 / 255) - np.float32(1)).transpose(2, 0, 1)[None]
        pred = self.det.run(None, {self.det_input: np.ascontiguousarray(x)})[0]
        quads, scores = self.post(pred, (h, w))
        return [(np.asarray(q, dtype=np.int64), float(s)) for q, s in zip(quads, scores)]

    def read(self, bgr: np.ndarray) -> tuple[str, float]:
        res = self.rec(np.ascontiguousarray(bgr), use_det=False, use_cls=False, use_rec=True)
        txts, scores = getattr(res, "txts", None), getattr(res, "scores", None)
        if not txts:
            return "", 0.0
        return str(txts[0]).strip(), float(scores[0])


_ENGINE: tuple[int, _Engine] | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    """The process's engine, built on first use (a forked child builds its own)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None or _ENGINE[0] != os.getpid():
            _ENGINE = (os.getpid(), _Engine())
        return _ENGINE[1]


def _det_scale(h: int, w: int) -> Fraction:
    """Detector scale for an h x w frame: up to DET_SIDE on the short side, at most DET_MAX_SIDE long."""
    up = max(Fraction(1), Fraction(DET_SIDE, min(h, w)))
    return min(up, Fraction(DET_MAX_SIDE, max(h, w)))


def _det_size(n: int, scale: Fraction) -> int:
    """n pixels at `scale`, rounded to the nearest multiple of 32 (the network's stride), at least 32."""
    return max(32, int((n * scale + 16) // 32) * 32)


def _snap(x0: int, y0: int, x1: int, y1: int, region: Box) -> tuple[int, int, int, int]:
    """Pad by MARGIN, snap outward to GRID (frame-anchored), clip to `region`: (x0, y0, x1, y1)."""
    x0 = max(region.x, (x0 - MARGIN) // GRID * GRID)
    y0 = max(region.y, (y0 - MARGIN) // GRID * GRID)
    x1 = min(region.x + region.w, -(-(x1 + MARGIN) // GRID) * GRID)
    y1 = min(region.y + region.h, -(-(y1 + MARGIN) // GRID) * GRID)
    return x0, y0, x1, y1


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"frames must be H x W or H x W x 3 uint8, got {a.dtype} {a.shape}")
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., ::-1])  # the models were trained on OpenCV's BGR


def _merge(found: list[tuple[tuple[int, int, int, int], str, float, float]]) -> list[TextBox]:
    """Union of snapped detections (edges, text, score, det_score): boxes that overlap or
    touch, also through a third, become their bounding box. Sorted by (y, x, h, w)."""
    if not found:
        return []
    edges = np.array([f[0] for f in found], dtype=np.int64)
    members = [[i] for i in range(len(found))]
    while True:
        x0, y0, x1, y1 = edges.T
        touch = ((x0[:, None] <= x1[None, :]) & (x0[None, :] <= x1[:, None])
                 & (y0[:, None] <= y1[None, :]) & (y0[None, :] <= y1[:, None]))
        label = np.arange(len(edges))
        while True:  # connected components: each box takes the smallest label it touches
            nxt = np.where(touch, label[None, :], len(edges)).min(axis=1)
            if np.array_equal(nxt, label):
                break
            label = nxt
        roots = np.unique(label)
        if len(roots) == len(edges):
            break
        edges = np.array([[x0[label == r].min(), y0[label == r].min(), x1[label == r].max(), y1[label == r].max()]
                          for r in roots])
        members = [[m for i in np.flatnonzero(label == r) for m in members[i]] for r in roots]
    out = []
    for (bx0, by0, bx1, by1), idx in zip(edges.tolist(), members):
        parts = sorted((found[i][0][1], found[i][0][0], found[i][1]) for i in idx)  # reading order
        texts = list(dict.fromkeys(t for _, _, t in parts if t))
        out.append(TextBox(bx0, by0, bx1 - bx0, by1 - by0, " ".join(texts),
                           round(max(found[i][2] for i in idx), 4), round(max(found[i][3] for i in idx), 4)))
    return sorted(out, key=lambda b: (b.y, b.x, b.h, b.w))


def detect_text(frames: Sequence[np.ndarray], box: Box | None = None) -> list[TextBox]:
    """Burned-in text in `frames` (grey H x W or RGB H x W x 3 uint8, all one size), inside `box`.

    Every frame is searched (the caller picks them, see `frames_to_check`); a
    detection counts when its mean text probability reaches `DET_THRESHOLD` and it is
    no thicker than `MAX_LINE` of the frame's shorter side (a line of text). The
    rest are padded and grid-snapped (see the module doc), clipped to `box` (the whole
    frame when None), and boxes of all frames that overlap or touch are merged into one.
    Returns full-frame boxes sorted by (y, x); an empty list when no text is found.
    The same frames give the same boxes; raises TextEngineMissing without `us4[text]`.
    """
    frames = list(frames)
    if not frames:
        return []
    shape = np.asarray(frames[0]).shape
    h, w = shape[:2]
    region = Box(0, 0, w, h) if box is None else box
    if region.x < 0 or region.y < 0 or region.w < 1 or region.h < 1 \
            or region.x + region.w > w or region.y + region.h > h:
        raise ValueError(f"box {region.as_list()} is not inside the {w} x {h} frame")
    engine = _engine()
    scale = _det_scale(h, w)
    found = []
    for f in frames:
        if np.asarray(f).shape != shape:
            raise ValueError(f"all frames must have one size: {np.asarray(f).shape} after {shape}")
        bgr = np.ascontiguousarray(region.apply(_as_bgr(f)))
        for quad, det in engine.detect(bgr, scale):
            qx0, qy0 = int(quad[:, 0].min()), int(quad[:, 1].min())
            qx1, qy1 = int(quad[:, 0].max()) + 1, int(quad[:, 1].max()) + 1
            if det < DET_THRESHOLD or min(qx1 - qx0, qy1 - qy0) > MAX_LINE * min(h, w):
                continue
            text, score = engine.read(bgr[qy0:qy1, qx0:qx1])
            edges = _snap(qx0 + region.x, qy0 + region.y, qx1 + region.x, qy1 + region.y, region)
            found.append((edges, text, score, det))
    return _merge(found)


def mask_text(frame: np.ndarray, boxes: Sequence[TextBox | Box]) -> np.ndarray:
    """A copy of `frame` (H x W or H x W x C) with every box painted black (0), clipped to the frame."""
    out = np.array(frame, copy=True)
    h, w = out.shape[:2]
    for b in boxes:
        x0, y0 = max(0, int(b.x)), max(0, int(b.y))
        x1, y1 = min(w, int(b.x) + int(b.w)), min(h, int(b.y) + int(b.h))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = 0
    return out


def text_engine_versions() -> dict[str, str]:
    """What the detected boxes depend on: library versions, the model files (name and sha256)
    and this module's settings. For the lock and for the build's cache key."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    # Read from the installed distributions and files, without importing rapidocr, onnxruntime
    # or OpenCV: a build's driver records these versions and must stay free of their threads.
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise TextEngineMissing("burned-in text detection needs rapidocr, which is not installed; "
                                "install it with: pip install 'us4[text]'")
    out = {}
    # rapidocr's DB post-processing runs on OpenCV (contours), pyclipper and shapely (box expansion).
    for key, dists in (("rapidocr", ("rapidocr",)), ("onnxruntime", ("onnxruntime",)), ("pyclipper", ("pyclipper",)),
                       ("shapely", ("shapely",)), ("opencv", ("opencv-python-headless", "opencv-python"))):
        out[key] = next((v for d in dists if (v := _dist_version(d))), "absent")
    models = Path(spec.submodule_search_locations[0]) / "models"
    for role, name in (("det_model", _DET_MODEL), ("rec_model", _REC_MODEL)):
        digest = hashlib.sha256()
        with open(models / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out[role] = f"{name} sha256:{digest.hexdigest()}"
    out["settings"] = (f"det>={DET_THRESHOLD} line<={MAX_LINE} pixel>={_PIXEL_THRESHOLD} unclip={_UNCLIP} "
                       f"side={DET_SIDE} max_side={DET_MAX_SIDE} margin={MARGIN} grid={GRID}")
    return tuple(out.items())


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
