"""HTTP routes for deployments and hosted inference."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app import idempotency
from app.db.hooks import on_commit
from app.db.models import DeploymentStatus
from app.deployments import repository as repo
from app.deployments import service
from app.deployments.schemas import (
    DeploymentCreate,
    DeploymentOut,
    PredictRequest,
    PredictResponse,
)
from app.deployments.service import DeploymentView
from app.deps import (
    DeploymentDep,
    SessionDep,
    StateDep,
    TenantDep,
    record_key_use,
)
from app.errors import Conflict, NotFound
from app.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.schemas import ERROR_RESPONSES, ErrorResponse, Page
from app.serving.manager import ServingManager
from app.state import app_state
from app.ttlcache import TTLCache

router = APIRouter(prefix="/v1/deployments", tags=["deployments"], responses=ERROR_RESPONSES)


async def get_serving(request: Request) -> ServingManager:
    serving: ServingManager = request.app.state.serving
    return serving


ServingDep = Annotated[ServingManager, Depends(get_serving)]


def deployment_views(request: Request) -> TTLCache[tuple[str, str], DeploymentView]:
    views: TTLCache[tuple[str, str], DeploymentView] = request.app.state.deployment_views
    return views


async def get_deployment_view(
    deployment_id: str,
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> DeploymentView:
    """Authenticate and find the tenant's deployment (or 404).

    Usually without the database: the key's tenant and a `ready` deployment's record are
    cached for `SEC_AUTH_CACHE_SECONDS` (the process that deletes a deployment drops it at
    once). Otherwise one short transaction reads what is missing. Predict does not use
    `SessionDep`: that session would hold a database connection for the whole time the
    request waits for its batch, and 64 waiting clients would drain the connection pool.
    """
    state = app_state(request)
    auth = state.auth
    key_hash = auth.key_hash(authorization)
    cached = auth.cached(key_hash)
    views = deployment_views(request)
    view = views.get((cached.tenant.id, deployment_id)) if cached is not None else None
    if cached is not None and view is not None:
        principal, found = cached, view
    else:
        async with state.db_slots:  # see app.deps.db_admission; held for the lookup only
            principal, found = await run_in_threadpool(
                service.view, state.sessionmaker, auth, key_hash, cached, deployment_id
            )
        if found.status == DeploymentStatus.READY:
            views.put((principal.tenant.id, deployment_id), found)
    await record_key_use(auth, principal)
    return found


DeploymentViewDep = Annotated[DeploymentView, Depends(get_deployment_view)]

_PREDICT_ERRORS: dict[int | str, dict[str, object]] = {
    409: {"model": ErrorResponse, "description": "Deployment not ready, or failed"},
    413: {"model": ErrorResponse, "description": "Too many inputs in one request"},
    422: {"model": ErrorResponse, "description": "Bad inputs: wrong type, empty or too long"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after `Retry-After` seconds"},
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentOut)
def create_deployment(
    *,
    body: DeploymentCreate,
    request: Request,
    session: SessionDep,
    state: StateDep,
    tenant: TenantDep,
    serving: ServingDep,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> DeploymentOut | JSONResponse:
    """Deploy a ready artifact; it starts `pending` and warms up to `ready` (or `failed`)."""
    idem = idempotency.begin(
        idempotency_key,
        request,
        session,
        tenant.id,
        body.model_dump(mode="json", exclude_unset=True),
    )
    if isinstance(idem, JSONResponse):
        return idem
    deployment = service.create_deployment(session, tenant.id, body, state.settings, serving)
    out = DeploymentOut.model_validate(deployment)
    if idem is not None:
        idem.complete(session, status.HTTP_201_CREATED, out.model_dump(mode="json"))
    return out


@router.get("", response_model=Page[DeploymentOut])
def list_deployments(
    *,
    session: SessionDep,
    tenant: TenantDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DeploymentOut]:
    """List the tenant's deployments, newest first."""
    rows, next_cursor = repo.list_page(session, tenant.id, cursor=cursor, limit=limit)
    return Page(
        data=[DeploymentOut.model_validate(r) for r in rows],
        next_cursor=next_cursor,
        has_more=next_cursor is not None,
    )


@router.get("/{deployment_id}", response_model=DeploymentOut)
def get_deployment(*, deployment: DeploymentDep) -> DeploymentOut:
    """One deployment and its status (`pending`, `ready`, `failed` with `error_message`)."""
    return DeploymentOut.model_validate(deployment)


@router.delete("/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(
    *, deployment: DeploymentDep, request: Request, session: SessionDep, serving: ServingDep
) -> Response:
    """Delete a deployment and unload its model; queued predictions fail."""
    views = deployment_views(request)
    key = (deployment.tenant_id, deployment.id)
    on_commit(session, lambda: views.pop(key))
    service.delete_deployment(session, deployment, serving)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{deployment_id}/predict", response_model=PredictResponse, responses=_PREDICT_ERRORS)
async def predict(
    *, body: PredictRequest, deployment: DeploymentViewDep, request: Request
) -> Response:
    """Labels and class probabilities for a list of texts or text pairs, in input order."""
    # The serving manager and settings straight from the app, not as dependencies: each
    # dependency costs a resolution step on every request.
    serving: ServingManager = request.app.state.serving
    if deployment.status == DeploymentStatus.PENDING:
        serving.resume_warm_up(deployment.id)
    service.require_ready(deployment)
    inputs = service.check_inputs(body, app_state(request).settings)
    try:
        predictions = await service.predict(serving, deployment, inputs)
    except (Conflict, NotFound):  # failed or gone meanwhile: read the record again next time
        deployment_views(request).drop_where(lambda key, _view: key[1] == deployment.id)
        raise
    # The answer is encoded here, in one orjson call, rather than through a pydantic model
    # per input (`response_model` still documents its shape).
    payload = {
        "deployment_id": deployment.id,
        "predictions": [{"label": p.label, "probabilities": p.probabilities} for p in predictions],
    }
    return Response(orjson.dumps(payload), media_type="application/json")
