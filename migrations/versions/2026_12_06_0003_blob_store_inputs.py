"""Uploads live in the blob store: `storage_key` on datasets and models, job inputs as refs.

A dataset or model uploaded from now on is a blob (`storage_key`) that any worker downloads
and checks against the row's sha256; `storage_path` (a file or folder on the API's disk) is
kept, nullable, for the rows written before, which only a worker on the API's machine can
open. Unfinished jobs' `inputs` move to the shape the worker now reads: each input a ref,
`{"key", "sha256"}` for a blob or `{"path"}` for such an older file; a built-in base model
stays its name. Written out here rather than imported, so this revision does what it did
whatever the application code becomes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 03:00:00.000000+00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = ("queued", "running", "cancel_requested")
OLD_DATA_FIELDS = {
    "train_path": "train",
    "validation_path": "validation",
    "unlabelled_path": "unlabelled",
}

jobs = sa.table(
    "jobs", sa.column("id", sa.String), sa.column("status", sa.String),
    sa.column("inputs", sa.JSON),
)  # fmt: skip


def upgrade() -> None:
    for table in ("datasets", "models"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("storage_key", sa.String(length=1024), nullable=True))
            batch.alter_column("storage_path", existing_type=sa.String(length=1024), nullable=True)
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.inputs).where(jobs.c.status.in_(UNFINISHED))
    ).all()
    for job_id, inputs in rows:
        if inputs and "train_path" in inputs:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(inputs=_refs(inputs)))


def _refs(old: dict[str, Any]) -> dict[str, Any]:
    model = old["model"]
    new: dict[str, Any] = {"model": {"path": model} if model.startswith("/") else model}
    for old_field, field in OLD_DATA_FIELDS.items():
        path = old.get(old_field)
        new[field] = {"path": path} if path else None
    return new


def downgrade() -> None:
    # Rows that only have a blob key cannot get a path back: downgrading is for an empty
    # deployment or one whose uploads all predate this revision.
    for table in ("datasets", "models"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("storage_key")
