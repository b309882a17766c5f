"""Request dependencies, as `Annotated` aliases routes declare by type.

- `SessionDep`: one transaction per request, committed after the route returns and before
  the response is sent (scope="function"), rolled back on any error.
- `TenantDep`: the tenant of the presented API key (401 otherwise), counted against the
  tenant's rate limit (429 with `Retry-After` beyond it).
- `JobDep`, `DatasetDep`, ...: "the tenant's object or 404". Routes take these instead of
  raw ids, so no route can forget the ownership check; another tenant's id is a 404,
  indistinguishable from an id that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.artifacts import repository as artifacts_repo
from app.datasets import repository as datasets_repo
from app.db.hooks import run_after_commit, run_after_rollback
from app.db.models import Artifact, Dataset, Deployment, Job, Tenant
from app.deployments import repository as deployments_repo
from app.errors import NotFound
from app.jobs import repository as jobs_repo
from app.queue import JobQueue
from app.ratelimit import TenantRateLimiter
from app.settings import Settings
from app.state import AppState, app_state
from app.storage import ArtifactStore
from app.tenants import service as tenants_service


async def db_admission(request: Request) -> AsyncIterator[None]:
    """Admit at most as many requests to the database as the pool has connections.

    Sync dependencies and routes run in the thread pool, one hop at a time, and a request
    keeps its connection between hops. Unbounded, 40 requests can take every thread waiting
    for a connection while the 15 requests holding the connections wait for a thread to
    finish in: a deadlock that ends in pool timeouts (the load test showed it). Waiting here,
    on the event loop, holds neither a thread nor a connection.
    """
    async with app_state(request).db_slots:
        yield


def get_session(
    request: Request, _admitted: Annotated[None, Depends(db_admission, scope="function")]
) -> Iterator[Session]:
    session = app_state(request).sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        run_after_rollback(session)
        raise
    else:
        run_after_commit(session)
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_state(request: Request) -> AppState:
    # The trivial dependencies are `async def` so they run on the event loop: a sync one
    # costs a hop through the thread pool per request.
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_store(state: StateDep) -> ArtifactStore:
    return state.store


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


async def get_job_queue(state: StateDep) -> JobQueue:
    return state.job_queue


JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]


def get_tenant(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Tenant:
    tenant, key = tenants_service.authenticate(session, authorization)
    tenants_service.record_use(app_state(request).side_sessionmaker, key)
    limiter: TenantRateLimiter = request.app.state.rate_limiter
    limiter.check(tenant.id)
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def get_job(job_id: str, session: SessionDep, tenant: TenantDep) -> Job:
    job = jobs_repo.get(session, tenant.id, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Dataset:
    dataset = datasets_repo.get(session, tenant.id, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    return dataset


DatasetDep = Annotated[Dataset, Depends(get_dataset)]


def get_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep) -> Artifact:
    artifact = artifacts_repo.get(session, tenant.id, artifact_id)
    if artifact is None:
        raise NotFound(f"artifact {artifact_id!r} not found")
    return artifact


ArtifactDep = Annotated[Artifact, Depends(get_artifact)]


def get_deployment(deployment_id: str, session: SessionDep, tenant: TenantDep) -> Deployment:
    deployment = deployments_repo.get(session, tenant.id, deployment_id)
    if deployment is None:
        raise NotFound(f"deployment {deployment_id!r} not found")
    return deployment


DeploymentDep = Annotated[Deployment, Depends(get_deployment)]
