"""The training frame cache: frames decoded once into a file on disk, mapped by later runs and by
the other processes of the machine; a damaged, stale or half-written file is never used."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import us4.train.data as data
from us4.cli import main
from us4.contract.benchmark import read_benchmark
from us4.errors import StorageError
from us4.release.read import open_release
from us4.train.data import load_release_videoset, release_videos
from us4.train.frame_cache import HEADER_BYTES, cached_frames, default_folder

from .conftest import as_in_a_terminal

REPO = Path(__file__).resolve().parents[1]
LOCK = "ab" * 32


def _frames(rows: np.ndarray, size: int = 8) -> np.ndarray:
    """Known pixels per row: what a decode of these rows gives."""
    rows = np.asarray(rows, dtype=np.int64)
    return ((rows[:, None, None, None] * 7 + np.arange(size * size).reshape(1, 1, size, size)) % 256).astype(np.uint8)


def _chunks(rows: np.ndarray, log: list[int], every: int = 16):
    log.append(len(rows))
    for at in range(0, len(rows), every):
        yield _frames(rows[at:at + every])


def _cache(folder: Path, log: list[int], lines: list[str], rows: np.ndarray = np.arange(64), lock: str = LOCK):
    """The cache of `rows` (8 x 8 frames, `_frames`), its decodes logged in `log`, its lines in `lines`."""
    return cached_frames(folder, release="t", version="1", lock_sha256=lock, rows=rows, size=8,
                         decode=lambda r: _chunks(r, log), say=lines.append)


@pytest.fixture
def counted_decodes(monkeypatch) -> list[int]:
    """Every PNG the training path decodes, counted at its one decode function."""
    seen: list[int] = []
    real = data.decode_png

    def decode_png(png: bytes, size: int) -> np.ndarray:
        seen.append(size)
        return real(png, size)

    monkeypatch.setattr(data, "decode_png", decode_png)
    return seen


# --- a release's frames ------------------------------------------------------------------------

def test_a_second_load_decodes_nothing_and_maps_the_frames_decoded_in_memory(phantom_pocus_release, tmp_path,
                                                                          counted_decodes):
    rel = open_release(phantom_pocus_release)
    first = load_release_videoset(rel, 32, cache=tmp_path)
    n = len(first.images)
    assert len(counted_decodes) == n and first.cache.reused is False
    [file] = tmp_path.glob("*.u8")
    assert file == first.cache.path and file.stat().st_size == HEADER_BYTES + n * 32 * 32
    before = file.stat()

    second = load_release_videoset(rel, 32, cache=tmp_path)
    assert len(counted_decodes) == n  # nothing decoded again
    assert second.cache.reused is True and second.cache.path == file
    assert (file.stat().st_ino, file.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    in_memory = load_release_videoset(rel, 32)  # the path without a cache
    assert torch.equal(second.images, in_memory.images) and torch.equal(first.images, in_memory.images)
    assert [m.tolist() for m in second.members] == [m.tolist() for m in in_memory.members]
    assert second.video_ids == in_memory.video_ids
    # the trainer's indexing on the mapped frames
    rows = torch.as_tensor(np.concatenate(second.members[:3]))
    assert torch.equal(second.images[rows], in_memory.images[rows])


def test_only_the_videos_asked_for_are_decoded(phantom_pocus_release, tmp_path, counted_decodes):
    rel = open_release(phantom_pocus_release)
    index = release_videos(rel)
    some = np.array([4, 1])
    vs = load_release_videoset(rel, 32, index=index, videos=some, cache=tmp_path)
    wanted = sum(len(index.members[v]) for v in some)
    assert len(counted_decodes) == wanted == vs.cache.frames == len(vs.images) < sum(map(len, index.members))
    assert vs.video_ids == [index.video_ids[4], index.video_ids[1]]
    whole = load_release_videoset(rel, 32)
    at = {v: k for k, v in enumerate(whole.video_ids)}
    for k, v in enumerate(vs.video_ids):  # each video's frames, in its order, as the whole set has them
        assert torch.equal(vs.images[vs.members[k]], whole.images[whole.members[at[v]]])


def test_another_size_is_another_file(phantom_pocus_release, tmp_path):
    rel = open_release(phantom_pocus_release)
    a = load_release_videoset(rel, 32, cache=tmp_path)
    b = load_release_videoset(rel, 24, cache=tmp_path)
    assert a.cache.path != b.cache.path and b.cache.reused is False and b.images.shape[-1] == 24
    assert sorted(p.name for p in tmp_path.glob("*.u8")) == sorted([a.cache.path.name, b.cache.path.name])


def test_another_lock_or_other_rows_is_another_file(tmp_path):
    log: list[int] = []
    a, use_a = _cache(tmp_path, log, [])
    b, use_b = _cache(tmp_path, log, [], lock="cd" * 32)
    c, use_c = _cache(tmp_path, log, [], rows=np.arange(1, 65))
    assert len({use_a.path, use_b.path, use_c.path}) == 3 and log == [64, 64, 64]
    np.testing.assert_array_equal(c, _frames(np.arange(1, 65)))
    _, again = _cache(tmp_path, log, [])
    assert again.reused and again.path == use_a.path and log == [64, 64, 64]


# --- damaged files -------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, says", [
    (lambda p: os.truncate(p, p.stat().st_size - 100), "truncated or damaged"),
    (lambda p: p.open("ab").write(b"\0" * 64), "truncated or damaged"),
    (lambda p: p.open("r+b").write(b"\0" * HEADER_BYTES), "no header"),
    (lambda p: p.write_bytes(_other_key(p.read_bytes())), "key differs"),
])
def test_a_damaged_or_stale_file_is_decoded_again_with_a_line(tmp_path, damage, says):
    log, lines = [], []
    _, use = _cache(tmp_path, log, lines)
    damage(use.path)
    frames, again = _cache(tmp_path, log, lines)
    assert log == [64, 64] and again.reused is False
    assert len(lines) == 1 and str(use.path) in lines[0] and says in lines[0] and "decoding it again" in lines[0]
    np.testing.assert_array_equal(frames, _frames(np.arange(64)))
    assert use.path.stat().st_size == HEADER_BYTES + 64 * 64
    _, third = _cache(tmp_path, log, lines)
    assert third.reused and log == [64, 64] and len(lines) == 1


def _other_key(raw: bytes) -> bytes:
    header = json.loads(raw[:HEADER_BYTES])
    header["key"] = "0" * 64
    return json.dumps(header).encode().ljust(HEADER_BYTES, b" ") + raw[HEADER_BYTES:]


# --- processes ---------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from us4.system import sigterm_as_interrupt
from us4.train.frame_cache import cached_frames

folder, delay, log = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])

def decode(rows):
    with open(log, "a") as f:
        f.write(f"{len(rows)}\\n")
    for at in range(0, len(rows), 16):
        time.sleep(delay)
        part = rows[at:at + 16]
        yield ((part[:, None, None, None] * 7 + np.arange(64).reshape(1, 1, 8, 8)) % 256).astype(np.uint8)

with sigterm_as_interrupt():
    frames, use = cached_frames(folder, release="t", version="1", lock_sha256="ab" * 32, rows=np.arange(64), size=8,
                                decode=decode, say=lambda line: print(line, flush=True))
print("done", int(frames.astype(np.int64).sum()), use.reused, flush=True)
"""


def _writer(folder: Path, delay: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(delay), str(log)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)


def _wait_for(cond, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"no {what} within {timeout} s"
        time.sleep(0.02)


def _temporaries(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp"))


def _writing(folder: Path, log: Path, delay: float = 0.5) -> subprocess.Popen:
    """A process writing the cache of `WRITER`, once its temporary file is there."""
    proc = _writer(folder, delay, log)
    _wait_for(lambda: _temporaries(folder) if folder.is_dir() else False, "temporary file")
    return proc


def _complete_next_time(folder: Path) -> None:
    frames, use = _cache(folder, [], [])
    assert use.reused is False and use.path.stat().st_size == HEADER_BYTES + 64 * 64
    assert _temporaries(folder) == [] and list(folder.glob("*.u8")) == [use.path]
    np.testing.assert_array_equal(frames, _frames(np.arange(64)))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_writing_leaves_no_temporary_file_and_the_next_run_completes(tmp_path, sig):
    proc = _writing(tmp_path / "frames", tmp_path / "decodes")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "done" not in out
    assert _temporaries(tmp_path / "frames") == [] and list((tmp_path / "frames").glob("*.u8")) == []
    _complete_next_time(tmp_path / "frames")


@pytest.mark.slow
def test_a_writer_killed_outright_leaves_a_temporary_file_the_next_writer_removes(tmp_path):
    proc = _writing(tmp_path / "frames", tmp_path / "decodes")
    proc.kill()
    proc.communicate(timeout=60)
    assert len(_temporaries(tmp_path / "frames")) == 1  # kill -9 runs no clean-up
    _complete_next_time(tmp_path / "frames")


@pytest.mark.slow
def test_two_processes_at_once_write_one_file_once_and_both_map_it(tmp_path):
    folder, log = tmp_path / "frames", tmp_path / "decodes"
    first = _writing(folder, log, 0.3)
    second = _writer(folder, 0.3, log)  # starts while the first one writes
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [o[1][-2000:] for o in outs]
    assert log.read_text().split() == ["64"]  # decoded once
    total = str(int(_frames(np.arange(64)).astype(np.int64).sum()))
    assert outs[0][0].splitlines()[-1] == f"done {total} False"
    assert outs[1][0].splitlines()[-1] == f"done {total} True"
    assert "waiting for t-1-8px-" in outs[1][0] and "which another process is writing" in outs[1][0]
    assert len(list(folder.glob("*.u8"))) == 1 and _temporaries(folder) == []


# --- where it is ---------------------------------------------------------------------------------

def test_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("US4_FRAME_CACHE", str(tmp_path / "a"))
    assert default_folder() == tmp_path / "a"
    monkeypatch.delenv("US4_FRAME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_folder() == tmp_path / "x" / "us4" / "frames"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_folder() == tmp_path / "h" / ".cache" / "us4" / "frames"


def test_an_unwritable_folder_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=r"^frame cache folder .*a-file/frames: cannot write there \(not a "
                                           r"directory\); choose another with --frame-cache or \$US4_FRAME_CACHE$"):
        _cache(blocker / "frames", [], [])


def test_us4_benchmark_with_an_unwritable_frame_cache_is_one_line(phantom_pocus_release, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["benchmark", "--pretrain", str(phantom_pocus_release), "--eval",
                                       str(phantom_pocus_release), "--config", "tiny", "--out", str(tmp_path / "b"),
                                       "--device", "cpu", "--quiet", "--frame-cache", str(blocker / "frames")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"us4: error: frame cache folder {blocker / 'frames'}: cannot write there (not a directory); "
        "choose another with --frame-cache or $US4_FRAME_CACHE"]
    assert not (tmp_path / "b").exists()


# --- the benchmark -------------------------------------------------------------------------------

def _benchmark(release: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "us4.cli", "benchmark", "--pretrain", str(release), "--eval",
                           str(release), "--config", "tiny", "--out", str(out), "--device", "cpu",
                           "--frame-cache", str(cache), *extra], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_benchmark_writes_its_frame_cache_once_and_records_it(phantom_pocus_release, tmp_path):
    cache = tmp_path / "frames"
    runs = [_benchmark(phantom_pocus_release, tmp_path / f"b{k}", cache) for k in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    [file] = cache.glob("*.u8")
    records = [read_benchmark((tmp_path / f"b{k}" / "benchmark.json").read_bytes()) for k in (1, 2)]
    for record, reused in zip(records, (False, True)):
        assert record.frame_cache.pretrain == record.frame_cache.eval  # one release: one file
        assert record.frame_cache.pretrain.file == file.name and record.frame_cache.pretrain.reused is reused
        assert record.frame_cache.pretrain.bytes == file.stat().st_size
        assert 0 < record.time_to_first_step_s < record.wall_s.total + 10
    assert f"frame cache {file}: " in runs[0].stderr and "written in" in runs[0].stderr
    assert f"frame cache {file}: " in runs[1].stderr and ", reused" in runs[1].stderr
    assert "an earlier run's audit of this pair" not in runs[0].stderr  # same release: no cross audit either way
    # the same training on the mapped frames: the same figures
    assert records[0].results["uscl"].honest == records[1].results["uscl"].honest


@pytest.mark.slow
def test_two_ranks_under_torchrun_share_one_frame_cache_file(phantom_pocus_release, tmp_path):
    cache = tmp_path / "frames"
    run = _benchmark(phantom_pocus_release, tmp_path / "b", cache, "--nproc", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    [file] = cache.glob("*.u8")
    assert _temporaries(cache) == []
    lines = [line for line in run.stderr.splitlines() if f"frame cache {file}: " in line]
    assert len(lines) == 2 and {line.split(":")[0] for line in lines} == {"rank 0", "rank 1"}
    assert sum("written in" in line for line in lines) == 1 and sum(", reused" in line for line in lines) == 1
    record = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert record["device"]["world_size"] == 2 and record["time_to_first_step_s"] > 0


def test_older_records_still_read():
    record = read_benchmark((REPO / "tests" / "fixtures" / "benchmark-0.2.0.json").read_bytes())
    assert record.frame_cache is None and record.time_to_first_step_s is None


@pytest.mark.slow
def test_the_audit_of_a_pair_of_releases_is_read_back_by_a_later_run(phantom_release, phantom_pocus_release, tmp_path,
                                                                      monkeypatch):
    from us4.train import benchmark

    audits: list[str] = []
    real = benchmark.disjointness_record
    monkeypatch.setattr(benchmark, "disjointness_record", lambda a, b: audits.append(a.name) or real(a, b))
    pre, ev = open_release(phantom_release), open_release(phantom_pocus_release)
    first = benchmark.cached_disjointness(pre, ev, tmp_path)
    assert not first.reused and audits == [pre.name] and first.status in ("disjoint", "leaked")
    again = benchmark.cached_disjointness(pre, ev, tmp_path)
    assert again.reused and audits == [pre.name]
    assert again.model_dump(exclude={"reused"}) == first.model_dump(exclude={"reused"})
    [file] = tmp_path.glob("audit-*.json")
    file.write_text("{damaged")
    third = benchmark.cached_disjointness(pre, ev, tmp_path)  # not ours: audited again
    assert not third.reused and audits == [pre.name] * 2 and third.model_dump() == first.model_dump()
    with open(file, "r+b") as f:  # a file larger than any record is not read into memory
        f.truncate(benchmark.MAX_BENCHMARK_BYTES + 1)
    assert not benchmark.cached_disjointness(pre, ev, tmp_path).reused and len(audits) == 3
    assert not benchmark.cached_disjointness(ev, pre, tmp_path).reused  # the other way round is another pair
    assert len(audits) == 4


@pytest.mark.parametrize("name", ["n" * 5000, "\U0001F600" * 2000, "\x01" * 2000])
def test_a_long_release_name_still_fits_the_header_and_the_file_name(tmp_path, name):
    """A lock's name has no length bound, and JSON writes a character outside ASCII as up to 12 bytes."""
    frames, use = cached_frames(tmp_path, release=name, version="1.0.0", lock_sha256=LOCK, rows=np.arange(16), size=8,
                                decode=lambda r: _chunks(r, []), say=print)
    assert len(use.path.name) < 120 and use.path.stat().st_size == HEADER_BYTES + 16 * 64
    np.testing.assert_array_equal(frames, _frames(np.arange(16)))
    assert json.loads(use.path.read_bytes()[:HEADER_BYTES])["frames"] == 16
    assert cached_frames(tmp_path, release=name, version="1.0.0", lock_sha256=LOCK, rows=np.arange(16), size=8,
                         decode=lambda r: _chunks(r, []), say=print)[1].reused


@pytest.mark.parametrize("given", ["nan", "inf", "not a time", "1e308", "FUTURE", "LAST_WEEK"])
def test_a_start_time_from_the_environment_that_cannot_be_the_launchers_is_not_taken(monkeypatch, given):
    """time_to_first_step_s counts from $US4_COMMAND_STARTED only where it is a time before this
    process began: a value left in a shell, or nonsense, would make the figure a lie."""
    from us4.system import COMMAND_STARTED, command_started, process_started

    own = process_started()
    value = {"FUTURE": repr(own + 3600), "LAST_WEEK": repr(own - 7 * 86_400)}.get(given, given)
    monkeypatch.setenv(COMMAND_STARTED, value)
    assert abs(command_started() - own) < 0.05
    monkeypatch.setenv(COMMAND_STARTED, repr(own - 5))  # what `--nproc`'s launcher sets: its own start
    assert command_started() == own - 5


@pytest.mark.parametrize("reused", [False, True])
def test_the_card_says_when_the_audit_was_an_earlier_runs(reused):
    from us4.contract.benchmark import Disjointness, read_benchmark
    from us4.contract.benchmark_card import benchmark_markdown

    record = read_benchmark((Path(__file__).parent / "fixtures" / "benchmark-0.2.0.json").read_bytes())
    audit = Disjointness(status="disjoint", statement="no frame of the pretraining release is in the evaluation one")
    if reused:
        audit = audit.model_copy(update={"reused": True})
    record = record.model_copy(update={"pretraining": record.pretraining.model_copy(update={"audit": audit})})
    card = benchmark_markdown(record)
    assert "No frame of the pretraining release is in the evaluation one." in card
    assert ("the audit of an earlier run of these two releases" in card) is reused
