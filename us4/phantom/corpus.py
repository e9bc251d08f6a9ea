"""Phantom raw folders laid out like the real sources, each in the form its holders have
it: the embedded default of `us4 demo` and the raw material of the tests.

- butterfly: video containers named by class prefix (several containers and codecs).
- clust: one folder of numbered PNG frames per sequence, named by class prefix.
- liver_fibrosis, covid19_lusms: hospital DICOM cine loops (multi-frame, compressed in
  several transfer syntaxes, with a Sequence of Ultrasound Regions; one series of
  single-frame files), with identifying values planted in every tag class and in the
  file and folder names, labelled by a `labels.csv` sheet (the hospital export's names
  say nothing of the class).
- POCUS: the public repository's data/ layout with its metadata sheet.

Every folder carries the marker by which a build knows its clips are phantoms.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..builder.plan import PHANTOM_MARKER
from ..registry import SOURCES, US4_SOURCES
from .clips import write_phantom_clip
from .dicom import PLANTED_IDENTITY, write_phantom_dicom, write_phantom_sequence

# Containers in rotation, so every build exercises several demuxers and codecs.
_EXTENSIONS = (".mp4", ".avi", ".mov", ".mpeg", ".gif")
# Transfer syntaxes in rotation for the hospital sources (photometric each one suits).
_DICOM = (("rle", "MONOCHROME2"), ("jpeg-baseline", "YBR_FULL_422"), ("jpeg-ls", "MONOCHROME2"),
          ("jpeg2000-lossless", "MONOCHROME2"), ("raw-explicit-le", "MONOCHROME2"))
#: the label sheet a hospital source's recipe names (pipelines/us4.yaml)
LABEL_SHEET = "labels.csv"
# What tells the phantom POCUS classes apart, loosely after the real findings: many
# B-lines (covid), a consolidation (bacterial pneumonia), neither (regular).
_POCUS_LOOK = {"covid": {"b_lines": 6, "consolidation": False},
               "pneumonia": {"b_lines": 1, "consolidation": True},
               "regular": {"b_lines": 0, "consolidation": False},
               "viral": {"b_lines": 3, "consolidation": False}}


def make_us4_corpus(root: str | Path, clips_per_class: int = 1, n_frames: int = 40,
                    seed: int = 0) -> dict[str, Path]:
    """One folder per US-4 source under `root`, each in its source's raw form; returns {source: folder}."""
    root = Path(root)
    folders: dict[str, Path] = {}
    n = 0
    for name in US4_SOURCES:
        source = SOURCES[name]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        mark_phantom(folder)
        labels: list[dict[str, str]] = []
        for cls in source.classes:
            for i in range(clips_per_class):
                shape = "rect" if source.organ == "liver" and n % 2 else "sector"
                if source.input == "video":
                    write_phantom_clip(folder / f"{cls.prefixes[0]}phantom_{i:02d}{_EXTENSIONS[n % len(_EXTENSIONS)]}",
                                       seed=seed + n, n_frames=n_frames, shape=shape, colour=(n == 1),
                                       frozen=4 if n == 0 else 0)
                elif source.input == "image_sequence":
                    write_phantom_sequence(folder / f"{cls.prefixes[0]}phantom_{i:02d}", seed=seed + n,
                                           n_frames=n_frames, shape=shape)
                else:
                    labels.append({"path": _hospital_clip(folder, n, seed + n, n_frames, shape), "label": cls.name})
                n += 1
        if labels:
            _write_sheet(folder / LABEL_SHEET, labels)
        folders[name] = folder
    return folders


def _hospital_clip(folder: Path, n: int, seed: int, n_frames: int, shape: str) -> str:
    """One DICOM clip as a scanner exports it, named by the patient; its path relative to `folder`."""
    patient = f"{PLANTED_IDENTITY['PatientName'].replace('^', '_')}_{PLANTED_IDENTITY['PatientID']}_{n:02d}"
    syntax, photometric = _DICOM[n % len(_DICOM)]
    if n % len(_DICOM) == len(_DICOM) - 1:  # a series of single-frame files, one folder
        write_phantom_dicom(folder / patient / "SERIES1", seed=seed, n_frames=min(n_frames, 12),
                            transfer_syntax=syntax, photometric=photometric, identity=PLANTED_IDENTITY,
                            multi_frame=False, shape=shape)
        return f"{patient}/SERIES1"
    rel = f"{patient}/US_{n:04d}.dcm"
    write_phantom_dicom(folder / rel, seed=seed, n_frames=n_frames, transfer_syntax=syntax, photometric=photometric,
                        identity=PLANTED_IDENTITY, shape=shape)
    return rel


def _write_sheet(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_pocus_corpus(root: str | Path, clips_per_class: int = 5, n_frames: int = 40,
                      seed: int = 100) -> Path:
    """A folder laid out like the POCUS repository's data/: convex and linear clips and
    a metadata sheet (including a row whose file is absent, as in the real sheet)."""
    data = Path(root) / "data"
    data.mkdir(parents=True, exist_ok=True)
    mark_phantom(data)
    pocus = SOURCES["pocus"]
    rows = []
    n = 0
    for cls in pocus.classes:
        for i in range(clips_per_class if cls.name != "viral" else 1):
            probe = "linear" if i == clips_per_class - 1 and cls.name == "regular" else "convex"
            ext = _EXTENSIONS[n % len(_EXTENSIONS)]
            stem = f"{cls.prefixes[0]}_phantom_{i:02d}"
            path = data / "pocus_videos" / probe / f"{stem}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_phantom_clip(path, seed=seed + n, n_frames=n_frames, fps=15.0, **_POCUS_LOOK[cls.name])
            rows.append({"Filename": stem, "Label": cls.sheet_labels[0], "Type": "video",
                         "Probe": probe, "License": "CC BY 4.0"})
            n += 1
    rows.append({"Filename": "Cov_phantom_not_shipped", "Label": "COVID-19", "Type": "video",
                 "Probe": "convex", "License": "CC BY 4.0"})
    _write_sheet(data / pocus.sheet, rows)
    return data


def mark_phantom(folder: Path) -> None:
    """Leave the marker by which a build knows its clips are phantoms (and names the release so)."""
    (folder / PHANTOM_MARKER).write_text("clips written by us4's phantom generator: synthetic, not real data\n")
