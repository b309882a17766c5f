"""Request dependencies, as `Annotated` aliases routes declare by type.

- `SessionDep`: one transaction per request, committed after the route returns and before
  the response is sent (scope="function"), rolled back on any error. The session is made on
  the event loop and only the commit (or rollback) goes to a thread, and only when the request
  used the database: building a session checks no connection out.
- `TenantDep`: the tenant of the presented API key (401 otherwise), counted against the
  tenant's rate limit (429 with `Retry-After` beyond it). Both usually answer on the event
  loop without I/O: the key's tenant from the process's short-lived cache
  (app/tenants/auth.py), the count from the process's lease on the shared window
  (app/ratelimit.py).
- `JobDep`, `DatasetDep`, ...: "the tenant's object or 404". Routes take these instead of
  raw ids, so no route can forget the ownership check; another tenant's id is a 404,
  indistinguishable from an id that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.artifacts import repository as artifacts_repo
from app.datasets import repository as datasets_repo
from app.db.hooks import has_hooks, run_after_commit, run_after_rollback
from app.db.models import Artifact, Dataset, Deployment, Job
from app.deployments import repository as deployments_repo
from app.errors import NotFound
from app.jobs import repository as jobs_repo
from app.queue import JobQueue
from app.ratelimit import TenantRateLimiter
from app.settings import Settings
from app.state import AppState, app_state
from app.storage import BlobStore
from app.tenants.auth import Authenticator, Principal, TenantRef

P = ParamSpec("P")
T = TypeVar("T")


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


async def get_session(
    request: Request, _admitted: Annotated[None, Depends(db_admission, scope="function")]
) -> AsyncIterator[Session]:
    session = app_state(request).sessionmaker()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_rollback, session)
        raise
    else:
        if session.in_transaction() or has_hooks(session):
            await run_in_threadpool(_commit, session)
    finally:
        session.close()


async def run_and_commit(
    session: Session, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """`fn(session, ...)` then the commit, in one hop to the thread pool: for an `async def`
    route whose database work is one short read, instead of a hop for each sync dependency,
    one for the route and one for the commit. The answer is built before the commit."""

    def work() -> T:
        result = fn(session, *args, **kwargs)
        _commit(session)
        return result

    return await run_in_threadpool(work)


def _commit(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        _rollback(session)
        raise
    run_after_commit(session)


def _rollback(session: Session) -> None:
    session.rollback()
    run_after_rollback(session)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_state(request: Request) -> AppState:
    # The trivial dependencies are `async def` so they run on the event loop: a sync one
    # costs a hop through the thread pool per request.
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_store(state: StateDep) -> BlobStore:
    return state.store


StoreDep = Annotated[BlobStore, Depends(get_store)]


async def get_job_queue(state: StateDep) -> JobQueue:
    return state.job_queue


JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]


async def get_tenant(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TenantRef:
    """On a cache miss the key is read through the request's own session (already admitted
    to the pool, so a miss never waits for a second connection)."""
    auth = app_state(request).auth
    key_hash = auth.key_hash(authorization)
    principal = auth.cached(key_hash)
    if principal is None:
        principal = await run_in_threadpool(auth.resolve, session, key_hash)
    await record_key_use(auth, principal)
    await count_request(request, principal.tenant.id)
    return principal.tenant


async def record_key_use(auth: Authenticator, principal: Principal) -> None:
    """The once-a-minute `last_used_at` stamp (a short write, in a thread, when due)."""
    if auth.stamp_due(principal):
        await run_in_threadpool(auth.stamp, principal)


async def count_request(request: Request, tenant_id: str) -> None:
    """The tenant's rate limit: on the loop from the process's lease, else a store call."""
    limiter: TenantRateLimiter = request.app.state.rate_limiter
    if limiter.try_local(tenant_id):
        return
    if limiter.needs_io:
        await run_in_threadpool(limiter.check, tenant_id)
    else:
        limiter.check(tenant_id)


TenantDep = Annotated[TenantRef, Depends(get_tenant)]


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
