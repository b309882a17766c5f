"""The API + a real Celery worker, end to end, on both runtime shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.conftest import migrate
from tests.integration.flow import run_full_flow

pytestmark = pytest.mark.integration


def test_flow_on_sqlite_and_the_sqlite_broker(tmp_path: Path) -> None:
    """The embedded shape: SQLite database, kombu's SQLAlchemy transport over SQLite."""
    settings = Settings(environment="test", var_dir=tmp_path / "var")
    assert settings.broker_url.startswith("sqla+sqlite:///")
    migrate(settings.database_url)
    run_full_flow(settings, tmp_path)


def test_flow_on_postgres_and_redis(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    """The multi-machine shape: Postgres database, Redis broker."""
    settings = Settings(
        environment="test",
        var_dir=tmp_path / "var",
        database_url=postgres_url,
        broker_url=redis_url,
    )
    migrate(postgres_url)
    run_full_flow(settings, tmp_path)
