"""Serve release repositories over the Hub's HTTP API with olah, offline, for clients
(`huggingface_hub`, `datasets`, `us4 download`) that cannot reach the Hub.

The root holds git repositories laid out as `ROOT/datasets/ORG/NAME` (what
`us4 publish --git ROOT` writes). olah runs as a child process in its own process group,
so that stopping the mirror stops the server and anything it started, and a Ctrl-C
aimed at us4 reaches olah only through us4, which then waits for it to finish.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from ..errors import HubError
from ..system import die_with_parent
from ..words import plural

DEFAULT_HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_LOG_NAME = "server.log"


def find_repositories(root: str | Path) -> list[str]:
    """`ORG/NAME` of every git repository (working tree or bare) under `root/datasets`."""
    base = Path(root) / "datasets"
    if not base.is_dir():
        return []
    return sorted(f"{org.name}/{repo.name}" for org in base.iterdir() if org.is_dir()
                  for repo in org.iterdir() if _is_git_repository(repo))


def _is_git_repository(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MirrorServer:
    """One olah process serving `root`; `start()` returns once it answers for a repository."""

    def __init__(self, root: str | Path, host: str = DEFAULT_HOST, port: int | None = None):
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.repositories: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._workdir: Path | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> str:
        if not self.root.is_dir():
            raise HubError(f"{self.root}: no such folder to serve")
        self.repositories = find_repositories(self.root)
        if not self.repositories:
            raise HubError(f"{self.root}: no repositories to serve (expected git repositories at "
                           f"{self.root}/datasets/ORG/NAME, as `us4 publish RELEASE --git {self.root} "
                           f"--repo ORG/NAME` writes them)")
        self.port = self.port or free_port(self.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="us4-mirror-"))
        config = self._workdir / "olah.toml"
        config.write_text(_olah_config(self.root, self.host, self.port, self._workdir / "cache"))
        with open(self._workdir / _LOG_NAME, "wb") as log:
            try:
                # `python -m olah.server`: the olah of this interpreter, whatever PATH says
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(self._workdir / "logs")],
                    cwd=self._workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_own_group_dying_with_parent,
                )
            except OSError as exc:
                self.stop()
                raise HubError(f"cannot start the mirror server ({exc})") from None
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoint

    def _wait_ready(self, timeout: float) -> None:
        # offline olah answers only for a revision; `main` is what every published repository has
        probe = f"{self.endpoint}/api/datasets/{self.repositories[0]}/revision/main"
        # a proxy configured for the outside world must not see loopback requests
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise HubError(f"mirror server on {self.endpoint} did not start: {self._failure_reason()}")
            try:
                with opener.open(probe, timeout=2) as resp:
                    # another program on the port would answer too: check it is olah serving this root
                    if json.load(resp).get("id") == self.repositories[0]:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise HubError(f"mirror server on {self.endpoint} did not answer within {timeout:.0f} s: "
                       f"{self._failure_reason()}")

    def _failure_reason(self) -> str:
        text = self.log_tail()
        if "address already in use" in text.lower():
            return f"port {self.port} on {self.host} is already in use"
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"

    def log_tail(self, limit: int = 4000) -> str:
        if self._workdir is None or not (self._workdir / _LOG_NAME).is_file():
            return ""
        return (self._workdir / _LOG_NAME).read_bytes()[-limit:].decode(errors="replace")

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGINT to the server's process group (uvicorn's clean shutdown), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # anything olah started that outlived it
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> MirrorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_mirror(root: str | Path, host: str = DEFAULT_HOST, port: int | None = None) -> Iterator[str]:
    """Serve `root` for the duration of a `with` block; yields the endpoint (for HF_ENDPOINT)."""
    with MirrorServer(root, host, port) as server:
        yield server.endpoint


def run_mirror(root: str | Path, host: str, port: int | None, echo: Callable[[str], None]) -> None:
    """`us4 mirror serve`: serve until Ctrl-C or SIGTERM, then stop the server and return."""
    server = MirrorServer(root, host, port)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell script that starts us4 in the background (`us4 mirror serve &`)
    # hands it SIGINT ignored, and Ctrl-C (kill -INT) must still stop the mirror
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        endpoint = server.start()
        echo(f"serving {plural(len(server.repositories), 'repository', 'repositories')} from {server.root} at {endpoint}")
        for repo in server.repositories:
            echo(f"  {repo}")
        echo(f"clients: export HF_ENDPOINT={endpoint}   (or us4 download ORG/NAME --endpoint {endpoint})")
        echo("Ctrl-C stops it")
        code = server.wait()
        raise HubError(f"mirror server stopped by itself (exit status {code}): {server._failure_reason()}")
    except KeyboardInterrupt:
        echo("stopping the mirror server")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _olah_config(root: Path, host: str, port: int, cache: Path) -> str:
    # json.dumps writes a valid TOML basic string for any path
    return "\n".join([
        "[basic]",
        f"host = {json.dumps(host)}",
        f"port = {port}",
        f"repos-path = {json.dumps(str(cache))}",
        f"mirrors-path = [{json.dumps(str(root))}]",
        "",
        "[accessibility]",
        "offline = true",  # never reach for huggingface.co: serve only what is under root
        "",
    ])


def _own_group_dying_with_parent() -> None:
    """Runs in the child before olah starts: its own process group (stopped as one), and on
    Linux a SIGTERM when us4 dies without cleaning up (SIGKILL), so no server is orphaned."""
    os.setsid()
    # the server's clean shutdown is its SIGINT handler: never inherit SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(signal.SIGTERM)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)
