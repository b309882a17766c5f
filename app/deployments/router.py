"""HTTP routes for deployments (records only, for now)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from app import idempotency
from app.deployments import repository as repo
from app.deployments import service
from app.deployments.schemas import DeploymentCreate, DeploymentOut
from app.deps import DeploymentDep, SessionDep, StateDep, TenantDep
from app.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.schemas import ERROR_RESPONSES, Page

router = APIRouter(prefix="/v1/deployments", tags=["deployments"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentOut)
def create_deployment(
    *,
    body: DeploymentCreate,
    request: Request,
    session: SessionDep,
    state: StateDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> DeploymentOut | JSONResponse:
    """Create a deployment of a ready artifact; it starts `pending`."""
    idem = idempotency.start(
        idempotency_key,
        factory=state.sessionmaker,
        session=session,
        tenant_id=tenant.id,
        path=request.url.path,
        payload=body.model_dump(mode="json", exclude_unset=True),
    )
    if isinstance(idem, idempotency.Replay):
        return idempotency.replay_response(idem)
    deployment = service.create_deployment(session, tenant.id, body)
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
    """One deployment and its status."""
    return DeploymentOut.model_validate(deployment)


@router.delete("/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(*, deployment: DeploymentDep, session: SessionDep) -> Response:
    """Delete a deployment."""
    service.delete_deployment(session, deployment)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
