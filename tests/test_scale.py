"""Builds on a real Dask cluster (`dask scheduler` and `dask worker` as separate processes on
127.0.0.1): the same bytes as the local pool, a worker killed mid-build, and the clear
errors a cluster can cause (no scheduler, a worker on other versions, a worker that does
not see the files)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.errors import BuildError
from us4.hub.mirror import free_port
from us4.phantom import write_phantom_clip

from .conftest import as_in_a_terminal, wait_for_cached_clips
from .test_build import digest, tiny_recipe

pytestmark = pytest.mark.slow  # end-to-end (Dask scheduler and worker processes): python -m pytest -m slow

# the dask CLI of this interpreter, whatever PATH says
DASK = [sys.executable, "-m", "dask"]


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def add_worker(self, *extra: str, prefix: list[str] | None = None, env: dict | None = None) -> subprocess.Popen:
        cmd = [*(prefix or []), *DASK, "worker", self.address, "--nworkers", "1", "--nthreads", "1",
               "--no-dashboard", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                env={**os.environ, **(env or {})})
        self.workers.append(proc)
        return proc

    def wait_for(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill(self, proc: subprocess.Popen) -> None:
        """The worker and its nanny, together (a nanny alone would start a new worker)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_cluster(workers: int = 2) -> Cluster:
    port = free_port()
    scheduler = subprocess.Popen([*DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cluster = Cluster(f"tcp://127.0.0.1:{port}", scheduler)
    for _ in range(workers):
        cluster.add_worker()
    if workers:
        cluster.wait_for(workers)
    return cluster


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(2)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def slow_raw(tmp_path_factory) -> Path:
    """Enough phantom clips, every frame kept, that a build takes several seconds."""
    raw = tmp_path_factory.mktemp("slow") / "butterfly"
    raw.mkdir()
    for i in range(16):
        write_phantom_clip(raw / f"{('Reg', 'Cov')[i % 2]}phantom_{i:02d}.mp4", seed=i, n_frames=64)
    return raw


def every_frame(tmp: Path) -> Path:
    """The recipe the slow builds use: each frame of slow_raw kept."""
    return tiny_recipe(tmp, sources={"butterfly": {"sampling": {"every_n": 1}}})


@pytest.fixture(scope="module")
def slow_ref(slow_raw, tmp_path_factory) -> Path:
    """slow_raw built with every_frame by the local pool, once (read-only)."""
    tmp = tmp_path_factory.mktemp("slow_ref")
    build_release(every_frame(tmp), {"butterfly": slow_raw}, tmp / "ref", workers=2, progress=False)
    return tmp / "ref"


def test_dask_build_is_byte_identical_to_the_local_pool(cluster, phantom_pocus_raw, phantom_pocus_release, tmp_path):
    out = tmp_path / "dask"
    result = CliRunner().invoke(main, ["build", "pocus", "--raw", f"pocus={phantom_pocus_raw}", "--out", str(out),
                                       "--scheduler", cluster.address, "-q"])
    assert result.exit_code == 0, result.output
    assert digest(out) == digest(phantom_pocus_release)  # built with 2 local processes


def test_local_cluster_gives_the_same_bytes(phantom_pocus_raw, phantom_pocus_release, tmp_path):
    out = tmp_path / "local-cluster"
    build_release("pocus", {"pocus": phantom_pocus_raw}, out, scheduler="local", workers=2, progress=False)
    assert digest(out) == digest(phantom_pocus_release)


def test_a_worker_killed_mid_build_costs_nothing(cluster, slow_raw, slow_ref, tmp_path):
    recipe = every_frame(tmp_path)
    victim = cluster.add_worker()
    cluster.wait_for(3)
    out = tmp_path / "killed"
    build = subprocess.Popen([sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={slow_raw}",
                              "--out", str(out), "--scheduler", cluster.address, "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_cached_clips(out, 2) >= 2
    cluster.kill(victim)
    assert build.wait(timeout=300) == 0, build.stderr.read()
    assert digest(out) == digest(slow_ref)


def test_the_real_pocus_sample_with_a_worker_killed_gives_the_local_bytes(cluster, pocus_data, pocus_release,
                                                                          tmp_path):
    victim = cluster.add_worker()
    cluster.wait_for(3)
    out = tmp_path / "pocus"
    build = subprocess.Popen([sys.executable, "-m", "us4.cli", "build", "pocus", "--raw", f"pocus={pocus_data}",
                              "--out", str(out), "--scheduler", cluster.address, "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_cached_clips(out, 5) >= 5
    cluster.kill(victim)
    assert build.wait(timeout=300) == 0, build.stderr.read()
    assert digest(out) == digest(pocus_release)  # built with 2 local processes


def test_every_input_kind_of_the_us4_phantom_gives_the_local_bytes_on_dask(cluster, phantom_us4_raw, phantom_release,
                                                                           tmp_path):
    """Videos, PNG sequences and DICOM with burned-in text masked: the same bytes from the workers."""
    out = tmp_path / "us4"
    build_release("us4", phantom_us4_raw, out, scheduler=cluster.address, progress=False)
    assert digest(out) == digest(phantom_release)


def test_a_killed_driver_resumes_like_a_local_build(cluster, slow_raw, slow_ref, tmp_path):
    recipe = every_frame(tmp_path)
    out = tmp_path / "rel"
    args = [sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={slow_raw}", "--out", str(out),
            "--scheduler", cluster.address, "-q"]
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = wait_for_cached_clips(out, 3)
    driver.kill()
    driver.wait()
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert " reused" in resumed.stdout and " 0 reused" not in resumed.stdout and done >= 3
    assert digest(out) == digest(slow_ref)


def test_a_scheduler_that_does_not_answer_is_one_line_within_seconds(tmp_path, slow_raw):
    start = time.monotonic()
    result = CliRunner().invoke(main, ["build", str(tiny_recipe(tmp_path)), "--raw", f"butterfly={slow_raw}",
                                       "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and time.monotonic() - start < 20
    assert "no Dask scheduler answered" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "release.json").exists()


def test_a_worker_on_another_us4_is_refused_naming_both_versions(tmp_path, slow_raw):
    preload = tmp_path / "other_us4.py"
    preload.write_text("import us4.version\nus4.version.__version__ = '0.0.9'\n")
    c = start_cluster(0)
    try:
        c.add_worker("--preload", str(preload))
        c.wait_for(1)
        with pytest.raises(BuildError, match=r"runs us4 0\.0\.9, this driver 0\.\d"):
            build_release(tiny_recipe(tmp_path), {"butterfly": slow_raw}, tmp_path / "o", scheduler=c.address,
                          progress=False)
    finally:
        c.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a private mount")
def test_a_worker_that_cannot_see_the_files_is_named(tmp_path, slow_raw):
    hidden = tmp_path / "hidden"
    shutil.copytree(slow_raw, hidden / "butterfly")
    c = start_cluster(0)
    try:
        # a worker in its own mount namespace, where the folder holding the clips is an empty tmpfs
        worker = c.add_worker(prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      f'mount -t tmpfs none "{hidden}" && exec "$0" "$@"'])
        c.wait_for(1)
        with pytest.raises(BuildError, match=f"cannot see {hidden}/butterfly") as err:
            build_release(tiny_recipe(tmp_path), {"butterfly": hidden / "butterfly"}, tmp_path / "o",
                          scheduler=c.address, progress=False)
        assert "shared filesystem" in str(err.value) and "tcp://" in str(err.value)
        assert worker.poll() is None
    finally:
        c.stop()


def test_two_builds_sharing_one_scheduler_never_mix(cluster, slow_raw, phantom_pocus_raw, phantom_pocus_release,
                                                    tmp_path):
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 2}}})
    ref = tmp_path / "ref"
    build_release(recipe, {"butterfly": slow_raw}, ref, workers=2, progress=False)
    first = subprocess.Popen([sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={slow_raw}",
                              "--out", str(tmp_path / "a"), "--scheduler", cluster.address, "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = subprocess.run([sys.executable, "-m", "us4.cli", "build", "pocus", "--raw", f"pocus={phantom_pocus_raw}",
                             "--out", str(tmp_path / "b"), "--scheduler", cluster.address, "-q"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert digest(tmp_path / "a") == digest(ref)
    assert digest(tmp_path / "b") == digest(phantom_pocus_release)


def test_ctrl_c_stops_a_local_cluster_build_at_once(slow_raw, tmp_path):
    recipe = every_frame(tmp_path)
    out = tmp_path / "rel"
    proc = subprocess.Popen([sys.executable, "-m", "us4.cli", "build", str(recipe), "--raw", f"butterfly={slow_raw}",
                             "--out", str(out), "--scheduler", "local", "--workers", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_in_a_terminal)
    wait_for_cached_clips(out, 1)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - start < 2
    err = proc.stderr.read()
    assert "run the same command again to resume" in err and "Traceback" not in err and len(err.splitlines()) == 1
