"""`python -m app.launcher` (what `sec serve` runs): one command brings up API + worker + beat on
embedded defaults, and Ctrl-C brings all of them down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.flow import REPO_ROOT

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_one_command_starts_and_stops_everything(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEC_")},
        "SEC_VAR_DIR": str(tmp_path / "var"),
        "SEC_ENVIRONMENT": "test",
    }
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.launcher", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker_name = f"sec-embedded-{proc.pid}@"
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, log_path.read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            except httpx.TransportError:
                time.sleep(0.5)
        assert ready, log_path.read_text()
        # The migrations ran, and the worker consumed the start-up reaper run.
        assert (tmp_path / "var" / "sec.db").is_file()
        while (
            "sec.jobs.reap" not in log_path.read_text() or "succeeded" not in log_path.read_text()
        ):
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        assert _alive(worker_name)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1)
    assert not _alive(worker_name), "the worker outlived the launcher"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
