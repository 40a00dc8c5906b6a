"""Our own entry points (``falco-triage run`` / ``ingest``) as real subprocesses for tests.

Tests start the operator the way a user would, against the test cluster's kubeconfig, and can
stop it gently (SIGTERM) or kill it (SIGKILL) to prove crash safety.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

T = TypeVar("T")

# Start-up of a Python process that imports kopf and the kubernetes client takes ~2 s here; the
# first watch adds a few more. 60 s is the "clearly broken" line on a loaded 2-core machine.
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    suffix = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")


class Service:
    """One of our processes with its own log file; a context manager that always cleans up."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], health_url: str | None
    ) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "falco_triage.cli", *args]
        self.env = {**os.environ, **env}
        self.health_url = health_url
        self._logdir = Path(tempfile.mkdtemp(prefix=f"ft-{name}-"))
        self.log_path = self._logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if self.health_url:
            wait_for(self._healthy, timeout=READY_TIMEOUT, what=f"{self.name} to become healthy")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        assert self.health_url is not None
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        for path in self._logdir.glob("*"):
            path.unlink()
        self._logdir.rmdir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            sys.stderr.write(f"--- {self.name} log ---\n{self.log()}\n")
        self.cleanup()


def operator_service(
    kubeconfig: Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
    standalone: bool = True,
    name: str = "operator",
) -> Service:
    """``falco-triage run`` against ``kubeconfig``, healthy once kopf serves its liveness probe."""
    port = free_port()
    mode = ["--standalone"] if standalone else []
    return Service(
        name,
        ["run", *mode, "--liveness", f"http://127.0.0.1:{port}/healthz", *extra],
        {
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            # Several operators may run at once in one test: each gets its own metrics port.
            "FALCO_TRIAGE_OPERATOR__METRICS_PORT": str(free_port()),
            **(env or {}),
        },
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
