"""A killed build, download or publish (issue 14, section 3): kill -9 and SIGTERM of the
driver leave no process behind, SIGTERM stops as Ctrl-C does (exit status 143, resumable),
a build killed by -9 is taken over by the next with a note, workers never hold the build
lock, and workers never import a `us4` folder of the working directory.

Builds run as a terminal starts them, as session leaders, so that every process they start
is found by its session id, as `trust.sh sig` finds them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from us4.builder import build_release
from us4.release.read import open_release
from us4.release.verify import verify_release

from .conftest import as_in_a_terminal, wait_for_cached_clips
from .test_build import clips, digest, tiny_recipe

pytestmark = pytest.mark.slow  # end-to-end (signals and killed processes, real builds): python -m pytest -m slow

US4 = str(Path(sys.executable).with_name("us4"))  # the console script, as a user runs it
# The driver runs the text detector's runtime before it builds: then its workers come from a fork server.
FORKSERVER = [sys.executable, "-c", "import onnxruntime; from us4.cli import main; main()"]
GONE_S = 2.0  # what the issue asks: every process of a killed build gone within 2 s of the driver's death


def session(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, _, session_id = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(session_id) == sid:
            found.append(int(entry.name))
    return found


def stop(proc: subprocess.Popen, sig: signal.Signals, limit: float = GONE_S) -> tuple[float, float]:
    """Send `sig` to the driver alone: the seconds until it exits, and from then until the last
    process of its session is gone (what outlives `limit` is killed: no test leaves one behind)."""
    sent = time.monotonic()
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    finally:
        died = time.monotonic()
        while session(proc.pid) and time.monotonic() - died < limit + 3:
            time.sleep(0.01)
        gone = time.monotonic() - died
        for pid in session(proc.pid):
            os.kill(pid, signal.SIGKILL)
    return died - sent, gone


def start(args: list[str], err: Path, head: list[str] | None = None, env: dict | None = None) -> subprocess.Popen:
    # stderr to a file: a process left behind would hold a pipe open forever
    return subprocess.Popen([*(head or [US4]), *args], stdout=subprocess.DEVNULL, stderr=err.open("w"),
                            start_new_session=True, preexec_fn=as_in_a_terminal, env=env)


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Raw clips that take a few seconds to build with 2 workers, their recipe, and the release
    an uninterrupted build makes of them."""
    tmp = tmp_path_factory.mktemp("slow")
    raw = clips(tmp / "raw", [f"Regphantom_{i:02d}.mp4" for i in range(10)], n_frames=96)
    recipe = tiny_recipe(tmp, sources={"butterfly": {"sampling": {"every_n": 1}}})
    build_release(recipe, {"butterfly": raw}, tmp / "ref", workers=2, progress=False)
    return raw, recipe, tmp / "ref"


def build_args(slow, out: Path, *extra: str) -> list[str]:
    raw, recipe, _ = slow
    return ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out), "--workers", "2", *extra]


def rerun(slow, out: Path) -> subprocess.CompletedProcess:
    resumed = subprocess.run([US4, *build_args(slow, out)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert verify_release(open_release(out)).ok
    assert digest(out) == digest(slow[2])
    return resumed


def start_stoppable(slow, out: Path, tmp_path: Path, method: str) -> subprocess.Popen:
    """A build of the slow clips whose workers are forked, come from a fork server, or are a
    LocalCluster's; returned once it has cached a clip."""
    if method == "forkserver":
        pytest.importorskip("onnxruntime")
    extra = ["--scheduler", "local"] if method == "local-cluster" else []
    proc = start(build_args(slow, out, "-q", *extra), tmp_path / "err.txt",
                 FORKSERVER if method == "forkserver" else None)
    wait_for_cached_clips(out, 1)
    return proc


@pytest.mark.parametrize("method", ["fork", "forkserver", "local-cluster"])
def test_kill_9_of_the_driver_ends_its_workers_and_the_rerun_takes_over(slow, tmp_path, method):
    out = tmp_path / "rel"
    proc = start_stoppable(slow, out, tmp_path, method)
    assert len(session(proc.pid)) >= 3  # the driver and its 2 workers (and a fork server)
    _, gone = stop(proc, signal.SIGKILL)
    assert gone < GONE_S, f"processes of the killed build lived {gone:.2f} s after it"
    done = wait_for_cached_clips(out, 0)
    resumed = rerun(slow, out)
    assert (f"note: the build of process {proc.pid} into this folder ended without finishing; resuming its work"
            in resumed.stderr)
    assert f"{done} reused" in resumed.stdout


@pytest.mark.parametrize("method", ["fork", "forkserver", "local-cluster"])
def test_sigterm_stops_a_build_as_ctrl_c_does(slow, tmp_path, method):
    out = tmp_path / "rel"
    proc = start_stoppable(slow, out, tmp_path, method)
    _, gone = stop(proc, signal.SIGTERM)
    assert proc.returncode == 143
    assert gone < GONE_S, f"processes of the stopped build lived {gone:.2f} s after it"
    err = (tmp_path / "err.txt").read_text()
    assert err.splitlines()[-1] == (f"us4: interrupted; finished clips are kept in {out / '.us4-work'}: run the same "
                                    "command again to resume"), err
    done = wait_for_cached_clips(out, 0)
    assert 1 <= done < 10 and not list((out / ".us4-work" / "clips").glob(".*.tmp"))
    resumed = rerun(slow, out)
    assert f"{done} reused" in resumed.stdout and "note:" not in resumed.stderr  # a clean stop: nothing to take over


def test_workers_never_hold_the_build_lock(tmp_path):
    """The lock belongs to the build's own process: a process it forked keeps no part of it, so
    the lock is free once the build's process is killed, whatever it forked."""
    lock = tmp_path / "work" / "build.lock"
    build = subprocess.Popen(
        [sys.executable, "-c", "import multiprocessing, sys, time; from pathlib import Path; "
         "from us4.builder.mutex import BuildMutex\n"
         "with BuildMutex(Path(sys.argv[1]), Path(sys.argv[2])):\n"
         "    child = multiprocessing.get_context('fork').Process(target=time.sleep, args=(60,)); child.start()\n"
         "    print(child.pid, flush=True); time.sleep(60)", str(lock.parent), str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    child = int(build.stdout.readline())
    probe = [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
             "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock)]
    try:
        assert subprocess.run(probe, capture_output=True).returncode != 0  # held by the build
        build.kill()
        build.wait()
        taken = subprocess.run(probe, capture_output=True, text=True)
        assert taken.returncode == 0, f"the lock outlived its build in a forked child: {taken.stderr}"
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_lock_kept_by_leftovers_of_a_dead_build_is_named_so(slow, tmp_path):
    """Processes an older us4 left behind hold the lock of a build whose process is gone: the
    error says so, rather than naming the dead process as a build at work."""
    out = tmp_path / "rel"
    (out / ".us4-work").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, sys.argv[2].encode()); print(flush=True); time.sleep(60)",
         str(out / ".us4-work" / "build.lock"), f"{dead.pid} {socket.gethostname()}"], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        refused = subprocess.run([US4, *build_args(slow, out, "-q")], capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"us4: error: --out {out}: the build of process {dead.pid} into this folder "
                                      f"ended, yet processes it started still hold its lock {out / '.us4-work'}"
                                      "/build.lock: end them, then run again")


def test_workers_never_import_a_us4_folder_of_the_working_directory(tmp_path):
    """A folder named us4 where the user works (not the package). The driver ran the text
    detector on the only clip itself, so the shards are written by workers of a fork server."""
    pytest.importorskip("onnxruntime")
    here = tmp_path / "work"
    (here / "us4").mkdir(parents=True)
    (here / "us4" / "__init__.py").write_text('"""not us4"""\n')
    raw = clips(tmp_path / "raw", ["Regphantom_00.mp4"], n_frames=8)
    recipe = tiny_recipe(tmp_path, sources={"butterfly": {"sampling": {"every_n": 2}, "text": "warn"}})
    done = subprocess.run([US4, "build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(tmp_path / "rel"),
                           "--workers", "2", "-q"], capture_output=True, text=True, cwd=here)
    assert done.returncode == 0, done.stderr
    assert verify_release(open_release(tmp_path / "rel")).ok


def test_a_slow_local_cluster_shutdown_does_not_fail_a_built_release(tmp_path, monkeypatch):
    """On a loaded machine a LocalCluster may not stop within its timeout: the release is built
    all the same, and the cluster's processes are killed."""
    import multiprocessing

    from distributed import LocalCluster

    real_close = LocalCluster.close

    def slow_close(self, timeout=None):  # what a loaded machine does: the shutdown outlasts its timeout
        return real_close(self, timeout=0.001)

    raw = clips(tmp_path / "raw", [f"Regphantom_{i:02d}.mp4" for i in range(2)], n_frames=8)
    recipe = tiny_recipe(tmp_path)
    monkeypatch.setattr(LocalCluster, "close", slow_close)
    before = set(multiprocessing.active_children())
    built = build_release(recipe, {"butterfly": raw}, tmp_path / "rel", scheduler="local", workers=2, progress=False)
    assert built.videos == 2 and verify_release(open_release(tmp_path / "rel")).ok
    assert not [p for p in multiprocessing.active_children() if p not in before]


# --- download and publish ---------------------------------------------------------------

REPO = "test/slow-phantom"


def throttled(upstream: str) -> str:
    """A proxy in front of `upstream` that sends file bodies at about 300 KB/s, as a slow network
    does, so that a download can be stopped midway; its endpoint. It serves until the tests end."""
    import http.client
    import http.server
    import threading
    from urllib.parse import urlsplit

    up = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.forward(body=False)

        def do_GET(self) -> None:
            self.forward(body=True)

        def forward(self, body: bool) -> None:
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            conn.request(self.command, self.path, headers={k: v for k, v in self.headers.items()
                                                           if k.lower() not in ("host", "connection")})
            resp = conn.getresponse()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                    self.send_header(key, value.replace(up.netloc, f"127.0.0.1:{self.server.server_port}"))
            self.send_header("Connection", "close")
            self.end_headers()
            while body and (chunk := resp.read(16384)):
                self.wfile.write(chunk)
                time.sleep(0.05 if "/resolve/" in self.path else 0)
            conn.close()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def hub(slow, tmp_path_factory):
    """The slow release published to a mirror: (its endpoint, a throttled endpoint to it)."""
    from us4.hub.mirror import serve_mirror
    from us4.hub.publish import publish_git

    root = tmp_path_factory.mktemp("hub") / "mirror"
    publish_git(open_release(slow[2]), root, REPO, quiet=True)
    with serve_mirror(root) as endpoint:
        yield endpoint, throttled(endpoint)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_download_installs_nothing_leaves_no_process_and_resumes(slow, hub, tmp_path, sig):
    endpoint, slow_endpoint = hub
    out = tmp_path / "dl"
    proc = start(["download", REPO, "--revision", "v0.0.1", "--out", str(out), "--endpoint", slow_endpoint, "-q"],
                 tmp_path / "err.txt")
    lock = tmp_path / ".dl.us4-partial" / "release.json"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the shards are on their way
    assert proc.poll() is None, "the download ended before it could be stopped"
    exited, gone = stop(proc, sig)
    assert exited < GONE_S, f"the download took {exited:.2f} s to stop"  # not after the transfers in flight
    assert gone < GONE_S
    assert not out.exists()  # nothing unverified where the release goes
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert (tmp_path / "err.txt").read_text().splitlines() == [
            f"us4: interrupted; what was fetched is kept in {tmp_path / '.dl.us4-partial'}: run the same command "
            "again to resume"]
    resumed = subprocess.run([US4, "download", REPO, "--revision", "v0.0.1", "--out", str(out), "--endpoint",
                              endpoint, "-q"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert digest(out) == digest(slow[2])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_git_publish_leaves_no_git_behind_and_the_rerun_publishes(slow, tmp_path, sig):
    """`git add` slowed down (a slow disk): the publish is stopped while git runs."""
    slow_git = tmp_path / "bin" / "git"
    slow_git.parent.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    slow_git.write_text(f"#!{sys.executable}\nimport os, sys, time\nif 'add' in sys.argv:\n"
                        f"    open({str(tmp_path / 'adding')!r}, 'w').close()\n    time.sleep(60)\n"
                        f"os.execv({real_git!r}, ['git', *sys.argv[1:]])\n")
    slow_git.chmod(0o755)
    root = tmp_path / "mirror"
    args = ["publish", str(slow[2]), "--repo", REPO, "--git", str(root), "-q"]
    proc = start(args, tmp_path / "err.txt", env={**os.environ, "PATH": f"{slow_git.parent}:{os.environ['PATH']}"})
    deadline = time.monotonic() + 60
    while not (tmp_path / "adding").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    exited, gone = stop(proc, sig)
    assert exited < GONE_S and gone < GONE_S, f"stopped in {exited:.2f} s, its git gone {gone:.2f} s later"
    repo = root / "datasets" / REPO
    assert not subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout  # nothing published
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert (tmp_path / "err.txt").read_text().splitlines() == [
            f"us4: interrupted; publishing {REPO} did not finish: run the same command again to finish it"]
    again = subprocess.run([US4, *args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout.split() == ["v0.0.1"]
    assert not subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert digest(repo) == digest(slow[2])


def test_an_interrupted_transfer_pool_stops_at_once():
    """huggingface_hub uploads and downloads in a thread pool: an interrupt raised in the thread
    running it would wait for every transfer in flight. The Hub upload and the download run
    their transfers through `in_background`; here a real pool of transfers that take 5 s each."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from us4.system import Terminated, in_background, sigterm_as_interrupt

    def transfers() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(time.sleep, [5, 5]))

    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    begun = time.monotonic()
    with pytest.raises(Terminated), sigterm_as_interrupt():
        in_background(transfers)
    assert time.monotonic() - begun < GONE_S
