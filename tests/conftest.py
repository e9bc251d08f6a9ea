"""Shared fixtures: phantom raw folders and releases built from them by the real build,
and the real POCUS sample (../shared/pocus) when it is present."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
POCUS_SAMPLE = REPO.parent / "shared" / "pocus"
PIPELINES = REPO / "pipelines"


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Tamper with a file: invert one byte at the given fraction of its length."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def as_in_a_terminal() -> None:
    """preexec_fn of a command a test stops with Ctrl-C: SIGINT handled as a terminal leaves it.
    A suite started in the background of a non-interactive shell inherits SIGINT ignored, and a
    Python child then never sees the KeyboardInterrupt the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_cached_clips(out: Path, n: int, timeout: float = 120) -> int:
    """Poll a running build's resume cache until it holds n finished clips."""
    import time

    clips = out / ".us4-work" / "clips"

    def finished() -> int:  # a clip is finished once its index (written after its pixels) exists
        return sum(1 for p in clips.glob("*.arrow") if not p.name.endswith(".pixels.arrow"))

    deadline = time.time() + timeout
    while time.time() < deadline and finished() < n:
        time.sleep(0.05)
    return finished()


def pocus_sample_or_skip() -> Path:
    data = POCUS_SAMPLE / "data"
    if not (data / "pocus_videos").is_dir():
        pytest.skip(f"real POCUS sample not present: put a folder holding data/pocus_videos/{{convex,linear}} and "
                    f"data/dataset_metadata.csv at {POCUS_SAMPLE} (CI has it) to run this real-data test")
    return data


@pytest.fixture(scope="session", autouse=True)
def frame_cache_folder(tmp_path_factory) -> Path:
    """Where the tests' benchmarks (and the processes they start) keep their frame caches: not the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("frames")
    os.environ["US4_FRAME_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def phantom_us4_raw(tmp_path_factory) -> dict[str, Path]:
    from us4.phantom.corpus import make_us4_corpus

    return make_us4_corpus(tmp_path_factory.mktemp("raw_us4"))


@pytest.fixture(scope="session")
def phantom_release(phantom_us4_raw, tmp_path_factory) -> Path:
    """A US-4 release built from phantom clips with the project's own recipe (read-only: copy to modify)."""
    from us4.builder import build_release

    out = tmp_path_factory.mktemp("rel") / "us4"
    build_release("us4", phantom_us4_raw, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def phantom_pocus_raw(tmp_path_factory) -> Path:
    from us4.phantom.corpus import make_pocus_corpus

    return make_pocus_corpus(tmp_path_factory.mktemp("raw_pocus"))


@pytest.fixture(scope="session")
def phantom_pocus_release(phantom_pocus_raw, tmp_path_factory) -> Path:
    """A POCUS-layout release of phantom clips, 5 folds (read-only: copy to modify)."""
    from us4.builder import build_release

    out = tmp_path_factory.mktemp("rel") / "pocus_phantom"
    build_release(PIPELINES / "pocus.yaml", {"pocus": phantom_pocus_raw}, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def pocus_data() -> Path:
    return pocus_sample_or_skip()


@pytest.fixture(scope="session")
def pocus_release(pocus_data, tmp_path_factory) -> Path:
    """The real POCUS sample built with pipelines/pocus.yaml (read-only: copy to modify)."""
    from us4.builder import build_release

    out = tmp_path_factory.mktemp("rel") / "pocus"
    build_release(PIPELINES / "pocus.yaml", {"pocus": pocus_data}, out, workers=2, progress=False)
    return out


def _clean_copy(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them: no build/ left from an earlier build (a
    module deleted from the source would still ship from there), nothing ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _borrow_dependencies(python: Path) -> None:
    """The dependencies come from this interpreter's site-packages, us4 itself only from the wheel.
    A venv's system_site_packages would give the base interpreter's, not those of the venv the suite
    runs in: list this interpreter's folders in a .pth file instead (plain lines: the .pth files
    inside them, such as an editable us4's, are not run)."""
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "borrowed.pth").write_text("".join(f"{f}\n" for f in folders if Path(f).is_dir()))


def _has_build_requirements() -> bool:
    """Whether this interpreter has what pyproject.toml's build-system requires (a venv holds the
    setuptools that `python -m venv` put there, maybe older, unless something upgraded it)."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    for req in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]):
        try:
            if not req.specifier.contains(version(req.name)):
                return False
        except PackageNotFoundError:
            return False
    return True


@pytest.fixture(scope="session")
def installed_demo(tmp_path_factory) -> SimpleNamespace:
    """us4 built into a wheel from a clean copy of the checkout, installed in a venv of its own, and
    `us4 demo` (tiny benchmark, CPU) run by it in another folder, once a session: test_packaging
    checks the install, test_demo the demo's products (read-only but for test_demo's card and publish)."""
    tmp = tmp_path_factory.mktemp("installed")
    dist = tmp / "dist"
    source = _clean_copy(tmp / "src")
    here = ["--no-build-isolation"] if _has_build_requirements() else []  # else pip installs them apart
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *here, "-q", "-w", str(dist), str(source)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("us4-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _borrow_dependencies(python)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    demo = subprocess.run([str(env_dir / "bin" / "us4"), "demo", "--out", "demo", "--config", "tiny", "--device",
                           "cpu", "-q"], cwd=elsewhere, capture_output=True, text=True, timeout=900)
    return SimpleNamespace(source=source, wheel=wheel, env_dir=env_dir, python=python, elsewhere=elsewhere,
                           demo=demo, out=elsewhere / "demo")
