"""The launcher's pieces that need no processes: child settings and command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.launcher import api_command, settings_env, worker_command
from app.settings import Settings

pytestmark = pytest.mark.unit


def test_children_get_the_launchers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(var_dir=tmp_path, job_lease_seconds=30, log_json=True)
    env = settings_env(settings)
    assert env["SEC_VAR_DIR"] == str(tmp_path)
    assert env["SEC_DATABASE_URL"] == settings.database_url
    assert env["SEC_BROKER_URL"] == settings.broker_url
    assert env["SEC_JOB_LEASE_SECONDS"] == "30"
    assert env["SEC_LOG_JSON"] == "true"
    # A child reading that environment ends up with exactly the launcher's settings.
    for key, value in env.items():
        if key.startswith("SEC_"):
            monkeypatch.setenv(key, value)
    assert Settings(_env_file=None) == settings


def test_worker_runs_one_job_at_a_time_with_beat() -> None:
    cmd = worker_command("info")
    assert cmd[cmd.index("-Q") + 1] == "gpu,cpu"
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert cmd[cmd.index("--prefetch-multiplier") + 1] == "1"
    assert cmd[cmd.index("--pool") + 1] == "prefork"  # the pool that enforces time limits
    assert "--beat" in cmd
    assert "--beat" not in worker_command("info", beat=False)


def test_api_uses_the_app_factory() -> None:
    cmd = api_command("0.0.0.0", 9000, "INFO")
    assert "app.main:create_app" in cmd
    assert "--factory" in cmd
    assert cmd[cmd.index("--port") + 1] == "9000"
    assert "--workers" not in cmd  # one process unless asked


def test_api_processes_become_uvicorn_workers() -> None:
    cmd = api_command("127.0.0.1", 9000, "info", processes=2)
    assert cmd[cmd.index("--workers") + 1] == "2"
