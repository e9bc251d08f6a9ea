"""Phantom raw folders laid out like the real sources: the embedded default of `us4 demo`
and the raw material of the tests. File names carry the registry's class prefixes."""
from __future__ import annotations

import csv
from pathlib import Path

from .builder.plan import PHANTOM_MARKER
from .media.phantom import write_phantom_clip
from .registry import SOURCES, US4_SOURCES

# Containers in rotation, so every build exercises several demuxers and codecs.
_EXTENSIONS = (".mp4", ".avi", ".mov", ".mpeg", ".gif")
# What tells the phantom POCUS classes apart, loosely after the real findings: many
# B-lines (covid), a consolidation (bacterial pneumonia), neither (regular).
_POCUS_LOOK = {"covid": {"b_lines": 6, "consolidation": False},
               "pneumonia": {"b_lines": 1, "consolidation": True},
               "regular": {"b_lines": 0, "consolidation": False},
               "viral": {"b_lines": 3, "consolidation": False}}


def make_us4_corpus(root: str | Path, clips_per_class: int = 1, n_frames: int = 40,
                    seed: int = 0) -> dict[str, Path]:
    """One folder per US-4 source under `root`; returns {source: folder} for `--raw`."""
    root = Path(root)
    folders: dict[str, Path] = {}
    n = 0
    for name in US4_SOURCES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        mark_phantom(folder)
        for cls in SOURCES[name].classes:
            for i in range(clips_per_class):
                ext = _EXTENSIONS[n % len(_EXTENSIONS)]
                write_phantom_clip(
                    folder / f"{cls.prefixes[0]}phantom_{i:02d}{ext}", seed=seed + n, n_frames=n_frames,
                    shape="rect" if SOURCES[name].organ == "liver" and n % 2 else "sector",
                    colour=(n == 3), frozen=4 if n == 5 else 0,
                )
                n += 1
        folders[name] = folder
    return folders


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
    with open(data / pocus.sheet, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return data


def mark_phantom(folder: Path) -> None:
    """Leave the marker by which a build knows its clips are phantoms (and names the release so)."""
    (folder / PHANTOM_MARKER).write_text("clips written by us4's phantom generator: synthetic, not real data\n")
