"""The security tests run against the same in-process app as tests/app (SQLite, a recording
job queue, two tenants): these fixtures are that package's, imported so pytest finds them."""

from __future__ import annotations

from tests.app.conftest import (  # noqa: F401  (fixtures)
    client,
    dataset_a,
    db,
    job_a,
    job_queue,
    settings,
    tenant_a,
    tenant_b,
)
