"""The schema is the migrations: the models match them (autogenerate finds no difference),
and upgrade -> downgrade -> upgrade round-trips, on SQLite and on Postgres."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, func, inspect, text

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


def assert_unfinished_jobs_get_their_inputs(url: str) -> None:
    """0002 fills in `jobs.inputs` of the jobs a worker may still run, as a submit would, and
    0003 turns them into refs (an older upload is a path on the API's disk)."""
    upgrade(url, "0001")
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine, only=["tenants", "datasets", "models", "jobs"])
        rows = _jobs_at_0001()
        with engine.begin() as conn:
            for table, values in rows:
                conn.execute(meta.tables[table].insert().values(**values))
        upgrade(url)
        with engine.connect() as conn:
            inputs = dict(conn.execute(text("SELECT id, inputs FROM jobs")).all())
    finally:
        engine.dispose()
    queued = inputs["job_q"]
    assert (queued if isinstance(queued, dict) else json.loads(queued)) == {
        "model": {"path": "/u/mdl_1"},
        "train": {"path": "/u/train.csv"},
        "validation": {"path": "/u/val.csv"},
        "unlabelled": None,
    }
    assert inputs["job_done"] is None


QUEUED_REFS = {"dataset": "ds_train", "validation_dataset": "ds_val"}


def _jobs_at_0001() -> list[tuple[str, dict[str, Any]]]:
    """A tenant's datasets, uploaded model, a queued job and a finished one, as of 0001."""
    stamps = {"created_at": func.now(), "updated_at": func.now()}
    owned = {"tenant_id": "ten_1", **stamps}
    stored = {"size_bytes": 1, "sha256": "0" * 64, **owned}

    def dataset(id_: str, path: str) -> tuple[str, dict[str, Any]]:
        shape = {"format": "csv", "rows": 2, "labelled_rows": 2, "has_pairs": False, "summary": {}}
        return "datasets", {"id": id_, "name": id_, "storage_path": path, **shape, **stored}

    def job(id_: str, status: str, spec: dict[str, str]) -> tuple[str, dict[str, Any]]:
        refs = {"dataset_id": spec["dataset"], "base_model": spec["base_model"], "spec": spec}
        state = {"queue": "gpu", "progress": 0.0, "attempts": 0, "max_attempts": 3}
        results = {"metrics": {}, "targets_met": {}}
        return "jobs", {"id": id_, "status": status, **refs, **state, **results, **owned}

    model = {"id": "mdl_1", "name": "m", "architecture": "bert", "details": {}}
    return [
        ("tenants", {"id": "ten_1", "name": "t", **stamps}),
        dataset("ds_train", "/u/train.csv"),
        dataset("ds_val", "/u/val.csv"),
        ("models", {**model, "storage_path": "/u/mdl_1", **stored}),
        job("job_q", "queued", {**QUEUED_REFS, "base_model": "mdl_1"}),
        job("job_done", "succeeded", {"dataset": "ds_train", "base_model": "minilm-l6"}),
    ]


@pytest.mark.unit
def test_sqlite_unfinished_jobs_get_their_inputs(sqlite_url: str) -> None:
    assert_unfinished_jobs_get_their_inputs(sqlite_url)


@pytest.mark.integration
def test_postgres_unfinished_jobs_get_their_inputs(postgres_url: str) -> None:
    assert_unfinished_jobs_get_their_inputs(postgres_url)
