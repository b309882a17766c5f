"""CLI tests drive `sec` in-process (typer's CliRunner) against the real app in-process."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from app.cli import cli
from tests.app import conftest as app_fixtures
from tests.app.conftest import TenantKey
from tests.client.inline_worker import inline_worker as inline_worker_fixture

# The API fixtures of tests/app, made visible here.
client = app_fixtures.client
dataset_a = app_fixtures.dataset_a
db = app_fixtures.db
job_a = app_fixtures.job_a
job_queue = app_fixtures.job_queue
settings = app_fixtures.settings
tenant_a = app_fixtures.tenant_a
inline_worker = inline_worker_fixture  # a worker that runs each enqueued job at once


class Sec:
    """`sec ARGS...` with tenant A's key, its HTTP calls going to the in-process app."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    def __call__(self, *args: str, key: str | None = None) -> Result:
        env: dict[str, Any] = {"SEC_API_KEY": self.key if key is None else key, "COLUMNS": "200"}
        return CliRunner().invoke(cli, list(args), obj={"http": self.client}, env=env)


@pytest.fixture
def sec(client: TestClient, tenant_a: TenantKey) -> Sec:
    return Sec(client, tenant_a.key)
