"""HTTP routes for the caller's own API keys (create another, list, revoke)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from app import idempotency
from app.db.hooks import on_commit
from app.deps import SessionDep, TenantDep
from app.schemas import ERROR_RESPONSES
from app.state import app_state
from app.tenants import repository as repo
from app.tenants import service
from app.tenants.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, TenantOut

router = APIRouter(prefix="/v1", tags=["keys"], responses=ERROR_RESPONSES)


@router.get("/me", response_model=TenantOut)
def whoami(*, tenant: TenantDep) -> TenantOut:
    """The tenant the presented key belongs to."""
    return TenantOut.model_validate(tenant)


@router.get("/keys", response_model=list[ApiKeyOut])
def list_keys(*, session: SessionDep, tenant: TenantDep) -> list[ApiKeyOut]:
    """The tenant's keys (never their secrets)."""
    return [ApiKeyOut.model_validate(k) for k in repo.list_keys(session, tenant.id)]


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_key(
    *,
    body: ApiKeyCreate,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> ApiKeyCreated | JSONResponse:
    """Create another key for this tenant. The secret is in this response only (a replay
    with the same Idempotency-Key returns the key's record with `key: null`)."""
    idem = idempotency.begin(
        idempotency_key,
        request,
        session,
        tenant.id,
        body.model_dump(mode="json", exclude_unset=True),
    )
    if isinstance(idem, JSONResponse):
        return idem
    key, plaintext = service.create_api_key(session, tenant.id, body.name)
    record = ApiKeyOut.model_validate(key).model_dump(mode="json")
    if idem is not None:
        # The stored replay never holds the secret: only its hash exists anywhere.
        idem.complete(session, status.HTTP_201_CREATED, {**record, "key": None})
    return ApiKeyCreated(**record, key=plaintext)


@router.delete("/keys/{key_id}", response_model=ApiKeyOut)
def revoke_key(
    *, key_id: str, request: Request, session: SessionDep, tenant: TenantDep
) -> ApiKeyOut:
    """Revoke a key: it answers 401 from now on (on other API replicas, within
    `SEC_AUTH_CACHE_SECONDS`)."""
    key = service.revoke_api_key(session, tenant.id, key_id)
    auth = app_state(request).auth
    on_commit(session, lambda: auth.forget_key(key.id))
    return ApiKeyOut.model_validate(key)
