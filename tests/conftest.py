"""Shared fixtures: phantom raw folders and releases built from them by the real build,
and the real POCUS sample (../shared/pocus) when it is present."""
from __future__ import annotations

from pathlib import Path

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
