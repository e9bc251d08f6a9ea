"""The gate between a clip's problems and ours (us4.media.gate).

A clip's own problem is a ledger entry; a failure of this machine (no memory, a full or
failing disk) or a bug in us4 stops `us4 build` with one line, caches nothing of the clip and
loses nothing already built. Faults are injected at our own seams, inside each decoder.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from us4.cli import main
from us4.media import MediaError, is_dicom_file
from us4.media.clips import ClipRef, decode_clip, probe_clip
from us4.media.gate import OursError, attempt
from us4.phantom import write_phantom_clip
from us4.phantom import write_phantom_dicom, write_phantom_sequence

SIZE = (64, 48)
FAULTS = {
    "MemoryError": lambda: MemoryError(),
    "ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "EIO": lambda: OSError(errno.EIO, "Input/output error"),
    "TypeError": lambda: TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"),
}


def _write(kind: str, folder: Path, seed: int) -> None:
    """One small clip of `kind` in `folder` (a file, or a folder of files for a series or a sequence)."""
    if kind == "video":
        write_phantom_clip(folder / f"clip{seed}.mp4", seed=seed, n_frames=8, size=SIZE)
    elif kind == "dicom_single":  # one single-frame file
        write_phantom_dicom(folder / f"single{seed}", seed=seed, n_frames=1, size=SIZE, multi_frame=False, text=None)
    elif kind == "dicom_multiframe":
        write_phantom_dicom(folder / f"cine{seed}.dcm", seed=seed, n_frames=4, size=SIZE, text=None)
    elif kind == "dicom_series":
        write_phantom_dicom(folder / f"series{seed}", seed=seed, n_frames=4, size=SIZE, multi_frame=False, text=None)
    else:
        write_phantom_sequence(folder / f"seq{seed}", seed=seed, n_frames=4, size=SIZE, text=None)


#: input kind of the recipe, and the seam inside the decoder where the fault is raised
DECODERS = {
    "video": ("video", "us4.media.decode", "_iter_frames"),
    "dicom_single": ("dicom", "us4.media.dicom.pixels", "_decode_frames"),
    "dicom_multiframe": ("dicom", "us4.media.dicom.pixels", "_frame"),
    "dicom_series": ("dicom", "us4.media.dicom.pixels", "_decode_frames"),
    "image_sequence": ("image_sequence", "us4.media.imageseq", "_frame"),
}


def _recipe(tmp: Path, kind: str) -> Path:
    spec = {"organ": "heart", "probe": "phased", "input": DECODERS[kind][0], "fps": 10, "classes": ["cine"],
            "label": {"constant": "cine"}, "ids": "path", "text": "off", "crop": "none",
            "sampling": {"every_n": 1}}
    recipe = {"name": "gate", "version": "0.0.1", "description": "the error gate", "seed": 1,
              "sources": {"scans": spec}, "dedup": {"threshold": 0},
              "splits": {"kind": "holdout", "validation": 0.5}, "output": {"png_compress_level": 1}}
    path = tmp / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def _build(recipe: Path, raw: Path, out: Path):
    return CliRunner().invoke(main, ["build", str(recipe), "--raw", f"scans={raw}", "--out", str(out),
                                     "--workers", "1", "-q"])


def _release_files(out: Path) -> dict[str, str]:
    """sha256 of every file of the release and of its build cache (the build's mutex aside)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build.lock"}


@pytest.mark.parametrize("kind", list(DECODERS))
def test_ours_stops_the_build_at_every_decoder_and_a_bad_clip_is_still_a_ledger_entry(tmp_path, monkeypatch, kind):
    raw, out = tmp_path / "raw", tmp_path / "rel"
    raw.mkdir()
    recipe = _recipe(tmp_path, kind)
    for seed in (1, 2):
        _write(kind, raw, seed)
    first = _build(recipe, raw, out)
    assert first.exit_code == 0, first.output
    built = _release_files(out)
    _write(kind, raw, 3)  # a new clip: the only one this build decodes

    module = importlib.import_module(DECODERS[kind][1])
    for name, fault in FAULTS.items():
        def failing(*args, **kwargs):
            raise fault()

        monkeypatch.setattr(module, DECODERS[kind][2], failing)
        result = _build(recipe, raw, out)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (name, result.output)
        assert len(lines) == 1 and lines[0].startswith("us4: error: "), (name, result.stderr)
        assert (name if name in ("MemoryError", "TypeError") else errno.errorcode[fault().errno]) in lines[0]
        assert _release_files(out) == built, name  # nothing of the new clip cached, nothing built lost
        monkeypatch.undo()

    # the next run retries the new clip; a real bad clip beside it is the clip's own ledger entry
    if kind == "video":
        (raw / "broken.mp4").write_bytes(b"\0not a clip" * 50)
    elif kind == "image_sequence":
        (raw / "seq9").mkdir()
        (raw / "seq9" / "frame_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    else:  # a cine loop cut short
        cut = write_phantom_dicom(raw / "cut.dcm", seed=9, n_frames=4, size=SIZE, text=None)[0]
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    result = _build(recipe, raw, out)
    assert result.exit_code == 3, result.output  # built, with failures in the ledger
    lock = json.loads((out / "release.json").read_text())
    assert len(lock["clips"]) == 3
    assert len(lock["failures"]) == 1 and lock["failures"][0]["stage"] == "probe"


def _palette_dicom(tmp: Path) -> Path:
    return write_phantom_dicom(tmp / "palette.dcm", seed=4, n_frames=3, size=SIZE, transfer_syntax="raw-explicit-le",
                               photometric="PALETTE COLOR", text=None)[0]


def test_no_memory_while_decoding_a_palette_is_ours_not_the_clips(tmp_path, monkeypatch):
    """dicom.py:838 read a MemoryError while applying the palette as the clip's failure."""
    ref = ClipRef("dicom", (str(_palette_dicom(tmp_path)),))
    pixels = importlib.import_module("us4.media.dicom.pixels")
    assert len(decode_clip(ref, [0, 2])) == 2

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(pixels, "apply_color_lut", no_memory)  # where pydicom's palette is applied for us
    with pytest.raises(MemoryError):  # the decoder lets it through, as it is
        decode_clip(ref, [0])
    with pytest.raises(OursError, match="this machine failed while reading this clip \\(MemoryError\\)"):
        attempt(decode_clip, ref, [0], where="palette.dcm")


def test_a_malformed_palette_is_still_the_clips(tmp_path):
    path = _palette_dicom(tmp_path)
    ds = pydicom.dcmread(path)
    del ds.RedPaletteColorLookupTableData
    ds.save_as(path)
    problem = attempt(decode_clip, ClipRef("dicom", (str(path),)), [0], where=str(path))
    assert isinstance(problem, MediaError) and problem.reason.startswith("unreadable palette (")


def test_an_io_error_opening_a_video_is_ours_not_the_clips(tmp_path, monkeypatch):
    """probe.py:134 turned any OSError from opening a video into the clip's MediaError."""
    path = tmp_path / "clip.mp4"
    write_phantom_clip(path, seed=1, n_frames=4, size=SIZE)
    probe = importlib.import_module("us4.media.probe")
    real_open = probe.av.open

    def failing_open(*args, **kwargs):  # the disk fails under PyAV's open, as a plain OSError
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(probe.av, "open", failing_open)
    for call in (lambda: probe_clip(ClipRef("video", (str(path),))),
                 lambda: attempt(probe_clip, ClipRef("video", (str(path),)), where=str(path))):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EIO
    monkeypatch.setattr(probe.av, "open", real_open)
    assert attempt(probe_clip, ClipRef("video", (str(path),)), where=str(path)).n_frames == 4


def test_an_io_error_reading_the_dicom_marker_is_ours_not_a_missing_marker(tmp_path, monkeypatch):
    """dicom.py:239 (_has_marker) swallowed every OSError: EIO read as "no DICM marker"."""
    path = write_phantom_dicom(tmp_path / "scan", seed=1, n_frames=1, size=SIZE, text=None)[0]
    path = path.rename(tmp_path / "SCAN0001")  # no suffix: only the marker says DICOM
    ref = ClipRef("dicom", (str(path),))
    assert probe_clip(ref).n_frames == 1
    real = Path.open

    def failing(self, *args, **kwargs):
        if self == path:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", failing)
    with pytest.raises(OSError) as err:
        is_dicom_file(path)  # not "no marker, so not DICOM"
    assert err.value.errno == errno.EIO
    with pytest.raises(OSError) as err:
        attempt(probe_clip, ref, where=str(path))
    assert err.value.errno == errno.EIO
    (tmp_path / "notes").write_text("x" * 200)  # unreadable for no fault of ours: still just no marker
    assert not is_dicom_file(tmp_path / "notes")


def test_an_io_error_reading_a_shard_is_no_finding_of_verify(tmp_path, monkeypatch):
    """release/verify.py:62 reported an I/O error as "unreadable Parquet" (a damaged release)."""
    from us4.release.read import open_release
    from us4.release.verify import verify_release

    raw, out = tmp_path / "raw", tmp_path / "rel"
    raw.mkdir()
    _write("video", raw, 1)
    assert _build(_recipe(tmp_path, "video"), raw, out).exit_code == 0
    release = open_release(out)
    assert verify_release(release).ok
    verify = importlib.import_module("us4.release.verify")

    def failing(path):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(verify, "_footer_rows", failing)
    with pytest.raises(OSError) as err:
        verify_release(release)
    assert err.value.errno == errno.EIO
    # At the command line it is the disk's one line, not a traceback.
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    assert "input/output error (EIO): the disk failed" in result.output
    assert "Traceback" not in result.output


def test_a_decoder_that_wraps_ours_as_the_clips_problem_still_stops(tmp_path):
    """The last line of the gate: a MediaError whose cause is ours is not the clip's."""
    def misreporting():
        try:
            raise MemoryError()
        except MemoryError as exc:
            raise MediaError("x.mp4", "cannot decode") from exc

    with pytest.raises(OursError, match="x.mp4: this machine failed"):
        attempt(misreporting, where="x.mp4")
    clip = attempt(lambda: (_ for _ in ()).throw(MediaError("x.mp4", "truncated")), where="x.mp4")
    assert isinstance(clip, MediaError) and clip.reason == "truncated"
    assert np.array_equal(attempt(np.arange, 3, where="x"), np.arange(3))


@pytest.mark.parametrize("fault", ["MemoryError", "EIO"])
def test_the_line_that_stops_a_build_of_hashed_ids_names_no_file(tmp_path, monkeypatch, fault):
    """Where a source's ids are content hashes, its file names may identify: the line that stops
    the build names the clip by its published id, and neither the path nor the file name (an
    OSError's text names its file); where ids are paths, the line names the clip's path."""
    raw, out = tmp_path / "raw", tmp_path / "rel"
    folder = raw / "DOE^JOHN_MRN12345678"
    write_phantom_dicom(folder / "DOE^JOHN.dcm", seed=1, n_frames=4, size=SIZE, text=None)
    recipe = json.loads(_recipe(tmp_path, "dicom_multiframe").read_text())
    recipe["sources"]["scans"]["ids"] = "hash"
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    pixels = importlib.import_module("us4.media.dicom.pixels")

    def failing(*args, **kwargs):
        if fault == "MemoryError":
            raise MemoryError()
        raise OSError(errno.EIO, "Input/output error", str(folder / "DOE^JOHN.dcm"))

    monkeypatch.setattr(pixels, "_frame", failing)
    result = _build(tmp_path / "recipe.json", raw, out)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("us4: error: ") and len(line.splitlines()) == 1, line
    assert ("scans/" if fault == "MemoryError" else "EIO") in line
    assert "DOE" not in line and "MRN" not in line and str(raw) not in line, line
