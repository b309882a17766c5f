"""jobs.inputs: a job's inputs, resolved at submit (dataset files, base model name or folder).

Jobs that are not finished when this runs get theirs filled in from their dataset and model
rows, as the submit path would have (a worker no longer looks them up), so jobs queued or
running across the upgrade still run. Finished jobs keep NULL: nothing reads it again.
The lookup is written out here rather than imported, so this revision does what it did
whatever the application code becomes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:00:00.000000+00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = ("queued", "running", "cancel_requested")

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("status", sa.String),
    sa.column("inputs", sa.JSON),
)
datasets = sa.table(
    "datasets", sa.column("id", sa.String), sa.column("tenant_id", sa.String),
    sa.column("storage_path", sa.String),
)  # fmt: skip
models = sa.table(
    "models", sa.column("id", sa.String), sa.column("tenant_id", sa.String),
    sa.column("storage_path", sa.String),
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
    conn = op.get_bind()
    unfinished = conn.execute(
        sa.select(jobs.c.id, jobs.c.tenant_id, jobs.c.spec).where(jobs.c.status.in_(UNFINISHED))
    ).all()
    for job_id, tenant_id, spec in unfinished:
        conn.execute(
            jobs.update().where(jobs.c.id == job_id).values(inputs=_inputs(conn, tenant_id, spec))
        )


def _inputs(conn: sa.Connection, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    def path(table: sa.TableClause, row_id: str | None) -> str | None:
        if not row_id:
            return None
        return conn.scalar(
            sa.select(table.c.storage_path).where(
                table.c.id == row_id, table.c.tenant_id == tenant_id
            )
        )

    base_model = spec["base_model"]
    uploaded = path(models, base_model) if base_model.startswith("mdl_") else None
    return {
        "model": uploaded or base_model,
        "train_path": path(datasets, spec["dataset"]),
        "validation_path": path(datasets, spec.get("validation_dataset")),
        "unlabelled_path": path(datasets, spec.get("unlabelled_dataset")),
    }


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("inputs")
