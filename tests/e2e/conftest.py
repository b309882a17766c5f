"""One real service for the end-to-end tests: `python -m app.launcher` (what `sec serve` runs:
migrations, uvicorn, a Celery worker with beat) on a free port and a private var folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.flow import REPO_ROOT

STARTUP_SECONDS = 120.0


@dataclass(frozen=True)
class Service:
    url: str
    port: int
    var_dir: Path
    log: Path
    env: dict[str, str]

    def create_key(self, tenant: str) -> str:
        """`sec create-key` against the service's database, as an operator would."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "create-key", "--tenant", tenant],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1]

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SEC_")},
        "SEC_VAR_DIR": str(root / "var"),
        "SEC_ENVIRONMENT": "test",
        "SEC_SSE_POLL_SECONDS": "0.5",
        # The machine's cores are shared: one torch thread per process.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = root / "service.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.launcher", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    svc = Service(f"http://127.0.0.1:{port}", port, root / "var", log, env)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert proc.poll() is None, f"the service exited:\n{svc.log_tail()}"
            try:
                if httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the service did not start:\n{svc.log_tail()}"
            time.sleep(0.5)
        yield svc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
