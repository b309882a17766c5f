"""The README's CLI tour, run exactly as written, against a real running service.

The commands come out of the README's fenced block marked `cli-tour`, so the README and
this test cannot drift apart. The only change: the service listens on a free port, not 8000.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from sec_client import SecClient
from tests.e2e.conftest import Service
from tests.integration.flow import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TOUR = re.compile(r"<!-- cli-tour.*?-->\s*```bash\n(.*?)```", re.DOTALL)


def readme_commands() -> str:
    match = TOUR.search((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no ```bash block after a <!-- cli-tour --> marker"
    return match.group(1)


def test_readme_block_has_every_step() -> None:
    block = readme_commands()
    for command in (
        "sec create-key",
        "sec datasets upload",
        "sec jobs plan",
        "sec jobs submit",
        "sec jobs watch",
        "sec artifacts download",
        "sec deploy",
        "sec predict",
    ):
        assert command in block, command


def test_readme_cli_tour(service: Service, tmp_path: Path) -> None:
    block = readme_commands().replace("127.0.0.1:8000", f"127.0.0.1:{service.port}")
    assert f"127.0.0.1:{service.port}" in block
    # A newcomer runs the block from the repository root; here, a scratch folder that has the
    # repository's .venv and examples/, so the files it writes stay out of the checkout.
    (tmp_path / ".venv").symlink_to(REPO_ROOT / ".venv")
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    script = f'set -euo pipefail\n{block}\necho "TOUR JOB=$JOB DEPLOYMENT=$DEPLOYMENT KEY=$SEC_API_KEY"\n'
    env = {k: v for k, v in service.env.items() if k not in ("SEC_API_URL", "SEC_API_KEY")}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["COLUMNS"] = "160"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output}\n--- service log ---\n{service.log_tail()}"

    found = re.search(r"TOUR JOB=(\S+) DEPLOYMENT=(\S+) KEY=(\S+)", done.stdout)
    assert found, output
    job_id, deployment_id, key = found.groups()
    # `sec jobs plan` printed the dry run's plan.
    assert "student (compressing)" in done.stdout
    assert "budget (max_minutes)" in done.stdout
    # `sec jobs watch` showed the live view's end state and the before/after table.
    assert "succeeded" in done.stdout
    assert "teacher (fp32)" in done.stdout
    assert "sha256 verified" in done.stdout
    with SecClient(service.url, key) as sec:
        job = sec.get_job(job_id)
        assert job.status == "succeeded"
        assert job.artifact_id is not None
        record = sec.get_artifact(job.artifact_id)
        downloaded = (tmp_path / "model.tar.gz").read_bytes()
        assert hashlib.sha256(downloaded).hexdigest() == record.sha256
        assert sec.get_deployment(deployment_id).status == "ready"
    # `sec predict` printed one labelled row per input.
    labels = re.findall(r"\b(positive|negative)\b\W+(0\.\d{3}|1\.000)\b", done.stdout)
    assert len(labels) == 2, done.stdout
