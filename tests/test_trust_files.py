"""Nothing of the user's is lost and nothing hangs (issue 14, section 3, the file cases):
a build deletes only files us4 wrote, and resumes an install interrupted at any instant;
special files and links leading out of a raw folder are never opened, only recorded; a
full disk or a read-only --out is one line naming the path, leaves no temporary file, and
the rerun ends with the same bytes."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import us4.builder.run as run
from us4.builder import build_release
from us4.builder.plan import make_plan
from us4.cli import main
from us4.contract.lock import Stage
from us4.errors import ReleaseError
from us4.phantom import write_broken_files, write_phantom_clip, write_phantom_dicom, write_phantom_sequence
from us4.recipe import load_recipe
from us4.release.attach import add_attachment
from us4.release.read import open_release
from us4.release.verify import verify_release

PAGE = 4096


def recipe(tmp: Path, name: str = "r.yaml", version: str = "0.0.1", **source) -> Path:
    """A recipe of one source `src`: prefixed videos by default."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["cov", "reg"],
            "label": {"prefix": True}, "sampling": {"every_n": 4, "max_frames": 6}, "crop": "auto", "text": "off",
            **source}
    path = tmp / name
    path.write_text(yaml.safe_dump({"name": "trust", "version": version, "seed": 1, "sources": {"src": spec},
                                    "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5},
                                    "output": {"png_compress_level": 1}}))
    return path


def clips(folder: Path, names: list[str], n_frames: int = 12, size: tuple[int, int] = (224, 192)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_phantom_clip(folder / name, seed=i, n_frames=n_frames, size=size)
    return folder


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a release folder (its hidden work folder aside)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)}


# --- raw folders: special files and links leading out are never opened -----------------------


@contextmanager
def never_opened(fifo: Path):
    """Fail if anything opens `fifo` to read it; a reader found waiting is released (it reads
    an empty file), so a failing test ends instead of hanging for good."""
    opened, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            try:  # opening the write end without blocking succeeds only while a reader waits
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            opened.set()
            os.close(fd)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
    assert not opened.is_set(), f"{fifo} was opened: a build blocks there for good"


def _socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def _plan(tmp: Path, raw: Path, **source):
    return make_plan(load_recipe(recipe(tmp, **source)), {"src": raw})


def test_special_files_in_a_video_folder_are_failures_and_never_opened(tmp_path):
    raw = clips(tmp_path / "raw", ["Reg_0.mp4"])
    os.mkfifo(raw / "Reg_fifo.mp4")
    sock = _socket(raw / "Cov_sock.mp4")
    try:
        os.mknod(raw / "Cov_null.mp4", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null: reads as empty
        device = True
    except PermissionError:
        device = False  # not root: the device case is left out
    with never_opened(raw / "Reg_fifo.mp4"):
        plan = _plan(tmp_path, raw)
    sock.close()
    assert [j.video_id for j in plan.jobs] == ["src/Reg_0.mp4"]
    got = {f.video_id: (f.stage, f.sha256, f.reason) for f in plan.failures}
    want = {"src/Reg_fifo.mp4": (Stage.PLAN, None, "a FIFO, not a regular file"),
            "src/Cov_sock.mp4": (Stage.PLAN, None, "a socket, not a regular file")}
    if device:
        want["src/Cov_null.mp4"] = (Stage.PLAN, None, "a character device, not a regular file")
    assert got == want


@pytest.mark.parametrize("kind", ["hashed video ids", "image_sequence", "dicom"])
def test_special_files_are_never_opened_whatever_the_input(tmp_path, kind):
    """Hashed ids hash the files that are no clips too; DICOM sniffs every file for its
    marker; an image sequence hashes every frame file. Each names its clips by hash."""
    raw = tmp_path / "raw"
    if kind == "hashed video ids":
        clips(raw, ["Reg_0.mp4"])
        fifo, source = raw / "notes", {"ids": "hash"}
    elif kind == "image_sequence":
        write_phantom_sequence(raw / "scan", seed=1, n_frames=4)
        fifo = raw / "scan" / "frame_9999.png"
        source = {"input": "image_sequence", "fps": 10, "label": {"constant": "reg"}}
    else:
        write_phantom_dicom(raw / "a.dcm", seed=1, n_frames=4)
        fifo, source = raw / "b.dcm", {"input": "dicom", "fps": 10, "label": {"constant": "reg"}}
    os.mkfifo(fifo)
    with never_opened(fifo):
        plan = _plan(tmp_path, raw, **source)
    assert len(plan.jobs) == 1
    [failure] = plan.failures
    assert (failure.stage, failure.sha256, failure.reason) == (Stage.PLAN, None, "a FIFO, not a regular file")
    # ids are hashes (the default for DICOM and image sequences): no name reaches the ledger, the local map keeps it
    assert failure.video_id == "src/unread-1"
    assert {"video_id": "src/unread-1", "source": "src", "path": fifo.relative_to(raw).as_posix(),
            "sha256": ""} in plan.local_ids


def test_a_fifo_in_the_raw_folder_ends_the_build_with_a_ledger_entry(tmp_path):
    """The whole command, as a user runs it: it ends (rc 3: some clip failed), the rest is built."""
    raw = clips(tmp_path / "raw", ["Reg_0.mp4", "Cov_1.mp4"])
    os.mkfifo(raw / "Reg_fifo.mp4")
    out = tmp_path / "F"
    try:
        done = subprocess.run([sys.executable, "-m", "us4.cli", "build", str(recipe(tmp_path)), "--raw", f"src={raw}",
                               "--out", str(out), "--workers", "2", "-q"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # (the build is killed)
        pytest.fail("the build hangs on a FIFO in the raw folder")
    assert done.returncode == 3, done.stderr
    assert "src/Reg_fifo.mp4: plan: a FIFO, not a regular file" in done.stderr
    lock = open_release(out).lock
    assert [c.video_id for c in lock.clips] == ["src/Cov_1.mp4", "src/Reg_0.mp4"]


@pytest.fixture
def links(tmp_path) -> tuple[Path, Path]:
    """A raw folder with links of every kind, and the real clip outside it that one names."""
    raw = clips(tmp_path / "raw", ["Reg_0.mp4"])
    outside = clips(tmp_path / "elsewhere", ["Cov_real.mp4", "Reg_far.mp4"], n_frames=8)
    clips(raw / "sub", ["Cov_1.mp4"])
    (raw / "Reg_inside.mp4").symlink_to("Reg_0.mp4")  # stays inside: fine
    (raw / "Cov_outside.mp4").symlink_to(outside / "Cov_real.mp4")
    (raw / "Cov_passwd.mp4").symlink_to("/etc/passwd")
    (raw / "far").symlink_to(outside)  # a folder outside
    (raw / "alias").symlink_to("sub")  # a folder inside: its clips are listed where they lie
    (raw / "sub" / "Reg_up.mp4").symlink_to("../../elsewhere/Reg_far.mp4")  # relative, and out
    return raw, outside / "Cov_real.mp4"


def test_links_leading_out_of_the_raw_folder_are_refused_in_the_ledger(links, tmp_path):
    raw, real = links
    plan = _plan(tmp_path, raw)
    assert [j.video_id for j in plan.jobs] == ["src/Reg_0.mp4", "src/Reg_inside.mp4", "src/sub/Cov_1.mp4"]
    out = "a link leading outside the raw folder, not followed (copy what it names into the folder)"
    assert {f.video_id: (f.stage, f.sha256, f.reason) for f in plan.failures} == {
        "src/Cov_outside.mp4": (Stage.PLAN, None, out),
        "src/Cov_passwd.mp4": (Stage.PLAN, None, out),
        "src/far": (Stage.PLAN, None, out),
        "src/sub/Reg_up.mp4": (Stage.PLAN, None, out),
    }


def test_a_broken_link_is_a_ledger_entry_not_a_traceback(tmp_path):
    raw = clips(tmp_path / "raw", ["Reg_0.mp4"])
    (raw / "Cov_gone.mp4").symlink_to("nowhere.mp4")
    (raw / "Cov_loop.mp4").symlink_to("Cov_loop.mp4")
    plan = _plan(tmp_path, raw)
    assert [j.video_id for j in plan.jobs] == ["src/Reg_0.mp4"]
    assert {f.video_id: f.reason for f in plan.failures} == {
        "src/Cov_gone.mp4": "a link that cannot be followed (No such file or directory)",
        "src/Cov_loop.mp4": "a link that cannot be followed (Too many levels of symbolic links)"}


def test_no_hash_of_a_file_outside_the_raw_folder_is_published(links, tmp_path):
    raw, real = links
    out = tmp_path / "rel"
    summary = build_release(recipe(tmp_path), {"src": raw}, out, workers=1, progress=False)
    published = "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
    for outside in (real, Path("/etc/passwd"), real.parent / "Reg_far.mp4"):
        assert hashlib.sha256(outside.read_bytes()).hexdigest() not in published, outside
    assert str(real.parent) not in published and "/etc" not in published
    assert sorted(f.video_id for f in summary.failures) == [
        "src/Cov_outside.mp4", "src/Cov_passwd.mp4", "src/far", "src/sub/Reg_up.mp4"]


# --- --out: only what us4 wrote is ever deleted -----------------------------------------------


def test_the_users_files_beside_an_empty_work_folder_stop_the_build_before_any_work(tmp_path):
    """What an interrupted first build leaves (an empty .us4-work) is no licence to delete."""
    raw = clips(tmp_path / "raw", ["Reg_0.mp4", "Cov_1.mp4"])
    out = tmp_path / "K"
    (out / "notes").mkdir(parents=True)
    (out / ".us4-work").mkdir()
    (out / "notes" / "thesis.txt").write_text("precious")
    (out / "paper.tex").write_text("mine")
    r = CliRunner().invoke(main, ["build", str(recipe(tmp_path)), "--raw", f"src={raw}", "--out", str(out), "-q"])
    assert r.exit_code == 1, r.output
    assert r.output.splitlines() == [f"us4: error: --out {out}: folder is not empty and holds no us4 release "
                                     "(first: notes/thesis.txt); choose an empty or new folder"]
    assert (out / "notes" / "thesis.txt").read_text() == "precious" and (out / "paper.tex").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [".us4-work", "notes", "paper.tex"]
    assert not any((out / ".us4-work").iterdir())  # refused before any work: nothing cached, no lock file


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory) -> tuple[Path, Path]:
    """An old release with an attachment the new one lacks, and the new release (another
    version, other frames): what an install replaces, and what it installs."""
    tmp = tmp_path_factory.mktemp("releases")
    raw = clips(tmp / "raw", ["Reg_0.mp4", "Cov_1.mp4", "Reg_2.mp4"])
    old = tmp / "old"
    build_release(recipe(tmp), {"src": raw}, old, workers=1, progress=False)
    (tmp / "benchmark.json").write_text('{"accuracy": 0.5}')
    add_attachment(open_release(old), tmp / "benchmark.json", "bench/benchmark.json")
    new = tmp / "new"
    build_release(recipe(tmp, "r2.yaml", version="0.0.2", sampling={"every_n": 3, "max_frames": 4}), {"src": raw},
                  new, workers=1, progress=False)
    return old, new


def _staged(new: Path, out: Path) -> tuple[Path, list[str]]:
    """The new release staged in out's work folder, as a build leaves it for `_install`."""
    staging = out / ".us4-work" / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(new, staging)
    return staging, open_release(new).lock.files()


@contextmanager
def interrupted_at(step: int):
    """Interrupt (as Ctrl-C or a kill would) the `step`-th change to the file system (a rename,
    a deletion); yields a list that holds True once it fired."""
    fired: list[bool] = []
    real = {name: getattr(os, name) for name in ("replace", "unlink", "rmdir")}
    count = [0]

    def wrap(name):
        def changed(*args, **kwargs):
            count[0] += 1
            if count[0] == step + 1 and not fired:
                fired.append(True)
                raise KeyboardInterrupt
            return real[name](*args, **kwargs)
        return changed

    for name in real:
        setattr(os, name, wrap(name))
    try:
        yield fired
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)


def test_an_install_interrupted_at_any_instant_is_completed_by_the_next_run(two_releases, tmp_path):
    old, new = two_releases
    want = digest(new)
    steps = 0
    while True:
        out = tmp_path / f"out{steps}"
        shutil.copytree(old, out)
        staging, files = _staged(new, out)
        with interrupted_at(steps) as fired:
            try:
                run._install(staging, out, files)
            except KeyboardInterrupt:
                pass
        if not fired:
            break
        if (out / "release.json").exists():  # a folder with a lock is a complete release (old or new)
            assert verify_release(open_release(out)).ok and digest(out) in (digest(old), want)
        run._check_out(out)  # the next run: every file there is known as us4's
        staging, files = _staged(new, out)  # rebuilt from the cache
        run._install(staging, out, files)
        assert digest(out) == want, f"interrupted at step {steps}"
        assert not (out / ".us4-work" / run.INSTALL_RECORD).exists() and not staging.exists()
        steps += 1
    assert steps >= len(files) + 2  # every rename and deletion of an install was tried
    assert digest(out) == want


def test_install_deletes_only_files_us4_wrote(two_releases, tmp_path):
    """A file of the user's that lands in --out while the build runs (after the check) survives."""
    old, new = two_releases
    out = tmp_path / "out"
    shutil.copytree(old, out)
    (out / "paper.tex").write_text("mine")
    (out / "bench" / "notes.txt").write_text("mine too")  # beside the old release's attachment
    staging, files = _staged(new, out)
    run._install(staging, out, files)
    assert (out / "paper.tex").read_text() == "mine" and (out / "bench" / "notes.txt").read_text() == "mine too"
    assert not (out / "bench" / "benchmark.json").exists()  # the old release's own file goes
    assert {k: v for k, v in digest(out).items() if k not in ("paper.tex", "bench/notes.txt")} == digest(new)


def test_a_users_file_beside_an_interrupted_install_stops_the_next_run(two_releases, tmp_path):
    old, new = two_releases
    out = tmp_path / "out"
    shutil.copytree(old, out)
    staging, files = _staged(new, out)
    with interrupted_at(4), pytest.raises(KeyboardInterrupt):
        run._install(staging, out, files)
    assert not (out / "release.json").exists()
    (out / "data" / "mine.csv").write_text("mine")
    with pytest.raises(ReleaseError, match=r"also holds 1 file that neither a release nor an interrupted build of "
                                           r"us4 wrote \(first: data/mine.csv\)"):
        run._check_out(out)


def test_a_first_build_interrupted_while_installing_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    raw = clips(tmp_path / "raw", ["Reg_0.mp4", "Cov_1.mp4"])
    r = recipe(tmp_path)
    build_release(r, {"src": raw}, tmp_path / "ref", workers=1, progress=False)
    out = tmp_path / "out"
    install = run._install

    def killed(staging: Path, target: Path, files: list[str]) -> None:
        with interrupted_at(3):  # the record written, the first files moved in
            install(staging, target, files)

    monkeypatch.setattr(run, "_install", killed)
    with pytest.raises(KeyboardInterrupt):
        build_release(r, {"src": raw}, out, workers=1, progress=False)
    assert not (out / "release.json").exists() and (out / "README.md").exists()
    monkeypatch.setattr(run, "_install", install)
    again = build_release(r, {"src": raw}, out, workers=1, progress=False)
    assert again.ingested == 0 and digest(out) == digest(tmp_path / "ref")


# --- a full disk, a read-only --out -----------------------------------------------------------


@pytest.fixture
def mounts(tmp_path):
    """mount(name, kib): a tmpfs of that size; resize(folder, kib) / read_only(folder, bool)."""
    mounted: list[Path] = []

    def sh(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode:
            if not mounted:
                pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): a full disk and "
                            "a read-only folder are tested as root (or with CAP_SYS_ADMIN) only")
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")

    class Mounts:
        def mount(self, name: str, kib: int) -> Path:
            folder = tmp_path / name
            folder.mkdir()
            sh("mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder))
            mounted.append(folder)
            return folder

        def resize(self, folder: Path, kib: int) -> None:
            sh("mount", "-o", f"remount,size={kib}k", str(folder))

        def read_only(self, folder: Path, ro: bool) -> None:
            sh("mount", "-o", f"remount,{'ro' if ro else 'rw'}", str(folder))

    if shutil.which("mount") is None or sys.platform != "linux":
        pytest.skip("a full disk and a read-only folder are tested with Linux tmpfs mounts")
    yield Mounts()
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _build(r: Path, raw: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "us4.cli", "build", str(r), "--raw", f"src={raw}", "--out", str(out),
                           "--workers", "2", "-q"], capture_output=True, text=True, timeout=300)


def _kib(files) -> int:
    """Space the files take on a tmpfs: whole pages."""
    return sum(-(-p.stat().st_size // PAGE) for p in files if p.is_file()) * PAGE // 1024


@pytest.fixture(scope="module")
def sized(tmp_path_factory) -> dict:
    """A raw folder (one clip broken, so a finished build keeps its cache to measure), its
    recipe, the release built on a roomy disk, and what its cache and frames shards take."""
    tmp = tmp_path_factory.mktemp("sized")
    raw = clips(tmp / "raw", ["Reg_0.mp4", "Cov_1.mp4", "Reg_2.mp4", "Cov_3.mp4"], n_frames=16, size=(320, 256))
    shutil.copy(write_broken_files(tmp / "broken")["not_video"], raw / "Cov_bad.mp4")
    r = recipe(tmp, sampling={"every_n": 1})
    ref = tmp / "ref"
    assert _build(r, raw, ref).returncode == 3
    return {"raw": raw, "recipe": r, "ref": ref,
            "cache_kib": _kib((ref / ".us4-work" / "clips").iterdir()),
            "frames_kib": _kib((ref / "data" / "frames").rglob("*.parquet"))}


ONE_LINE = re.compile(r"us4: error: (/\S+): no space left on device \(ENOSPC\): free space and run the same command "
                      r"again to resume")


@pytest.mark.parametrize("phase", ["ingest", "shards"])
def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_the_rerun_resumes(sized, mounts, phase):
    """Raised in a worker process (2 workers), it reaches the user as the one line."""
    assert sized["cache_kib"] > 400 and sized["frames_kib"] > 200  # room to fail in the middle of either phase
    kib = sized["cache_kib"] // 2 if phase == "ingest" else sized["cache_kib"] + 16 + sized["frames_kib"] // 2
    disk = mounts.mount("disk", kib)
    out = disk / "rel"
    done = _build(sized["recipe"], sized["raw"], out)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    where = ONE_LINE.fullmatch(line)
    assert where, line
    assert where.group(1).startswith(str(out / ".us4-work" / ("clips" if phase == "ingest" else "staging")))
    assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
    mounts.resize(disk, 64 * 1024)
    again = _build(sized["recipe"], sized["raw"], out)
    assert again.returncode == 3, again.stderr
    ingested, reused = map(int, re.search(r"(\d+) ingested, (\d+) reused", again.stdout).groups())
    assert reused >= 1 and (ingested == 0 if phase == "shards" else ingested >= 1)  # resumed from the cache
    assert digest(out) == digest(sized["ref"])


def test_a_read_only_out_is_one_line_and_builds_once_writable(sized, mounts):
    disk = mounts.mount("ro", 64 * 1024)
    out = disk / "rel"
    out.mkdir()
    mounts.read_only(disk, True)
    done = _build(sized["recipe"], sized["raw"], out)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"us4: error: {out / '.us4-work'}: read-only file system (EROFS): use a writable folder, or make this one "
        "writable and run the same command again to resume"]
    mounts.read_only(disk, False)
    assert _build(sized["recipe"], sized["raw"], out).returncode == 3
    assert digest(out) == digest(sized["ref"])
