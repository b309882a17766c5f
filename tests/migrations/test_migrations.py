"""The schema is the migrations: the models match them (autogenerate finds no difference),
and upgrade -> downgrade -> upgrade round-trips, on SQLite and on Postgres."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db.migrate import downgrade, upgrade
from app.db.models import Base
from app.db.session import make_engine


def assert_models_match_migrations(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "render_as_batch": True}
            )
            diff = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"
    assert set(Base.metadata.tables) <= tables


def assert_round_trip(url: str) -> None:
    upgrade(url)
    downgrade(url, "base")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            left = set(inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert left == set(), f"downgrade left tables behind: {left}"
    upgrade(url)
    assert_models_match_migrations(url)


@pytest.mark.unit
def test_sqlite_models_match_and_round_trip(sqlite_url: str) -> None:
    assert_models_match_migrations(sqlite_url)
    assert_round_trip(sqlite_url)


@pytest.mark.integration
def test_postgres_models_match_and_round_trip(postgres_url: str) -> None:
    assert_models_match_migrations(postgres_url)
    assert_round_trip(postgres_url)
