"""HTTP routes for base models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from fastapi.responses import JSONResponse

from app import idempotency
from app.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from app.errors import NotFound
from app.models import repository as repo
from app.models import service
from app.models.schemas import ModelList, ModelOut
from app.schemas import ERROR_RESPONSES
from sec_engine.models.builtin import BUILTIN_MODELS

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("", response_model=ModelList)
def list_models(*, session: SessionDep, tenant: TenantDep) -> ModelList:
    """Built-in base models (available offline) and the tenant's uploaded models."""
    builtins = [
        ModelOut.from_builtin(m, service.builtin_available(m)) for m in BUILTIN_MODELS.values()
    ]
    uploaded = [ModelOut.from_row(m) for m in repo.list_all(session, tenant.id)]
    return ModelList(data=builtins + uploaded)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelOut)
def upload_model(
    *,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    tenant: TenantDep,
    file: Annotated[
        UploadFile, File(description=".zip or .tar.gz: config.json, *.safetensors, tokenizer")
    ],
    name: Annotated[str | None, Form(max_length=300)] = None,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> ModelOut | JSONResponse:
    """Upload an HF-format model archive (safetensors only; no remote code)."""
    # Hashing a large archive costs a read: only done when the client asked for a replay.
    digest = idempotency.file_sha256(file.file) if idempotency_key is not None else None
    idem = idempotency.begin(
        idempotency_key,
        request,
        session,
        tenant.id,
        {"file_sha256": digest, "filename": file.filename, "name": name},
    )
    if isinstance(idem, JSONResponse):
        return idem
    model = service.create_model(
        session,
        settings,
        store,
        tenant.id,
        upload=file.file,
        filename=file.filename or "model",
        name=name,
    )
    out = ModelOut.from_row(model)
    if idem is not None:
        idem.complete(session, status.HTTP_201_CREATED, out.model_dump(mode="json"))
    return out


@router.get("/{model_id}", response_model=ModelOut)
def get_model(*, model_id: str, session: SessionDep, tenant: TenantDep) -> ModelOut:
    """A built-in model by name, or one of the tenant's uploaded models by id."""
    builtin = BUILTIN_MODELS.get(model_id)
    if builtin is not None:
        return ModelOut.from_builtin(builtin, service.builtin_available(builtin))
    model = repo.get(session, tenant.id, model_id)
    if model is None:
        raise NotFound(f"model {model_id!r} not found")
    return ModelOut.from_row(model)
