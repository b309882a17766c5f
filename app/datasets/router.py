"""HTTP routes for datasets."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse

from app import idempotency
from app.datasets import repository as repo
from app.datasets import service
from app.datasets.schemas import DatasetOut, DatasetPurpose
from app.deps import DatasetDep, SessionDep, SettingsDep, StoreDep, TenantDep
from app.errors import PayloadTooLarge
from app.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.schemas import ERROR_RESPONSES, Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def upload_dataset(
    *,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    tenant: TenantDep,
    file: Annotated[UploadFile, File(description="CSV or JSONL: text, [text_pair], [label]")],
    name: Annotated[str | None, Form(max_length=300)] = None,
    purpose: Annotated[DatasetPurpose, Form()] = DatasetPurpose.LABELLED,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> DatasetOut | JSONResponse:
    """Upload a dataset; it is validated whole and summarised, or refused with the reason."""
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is larger than the limit of {settings.max_upload_bytes} bytes"
        )
    idem = idempotency.begin(
        idempotency_key,
        request,
        session,
        tenant.id,
        {
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "filename": file.filename,
            "name": name,
            "purpose": purpose,
        },
    )
    if isinstance(idem, JSONResponse):
        return idem
    dataset = service.create_dataset(
        session,
        settings,
        store,
        tenant.id,
        filename=file.filename or "upload",
        data=data,
        name=name,
        purpose=purpose,
    )
    out = DatasetOut.model_validate(dataset)
    if idem is not None:
        idem.complete(session, status.HTTP_201_CREATED, out.model_dump(mode="json"))
    return out


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    *,
    session: SessionDep,
    tenant: TenantDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DatasetOut]:
    """List the tenant's datasets, newest first."""
    rows, next_cursor = repo.list_page(session, tenant.id, cursor=cursor, limit=limit)
    return Page(
        data=[DatasetOut.model_validate(r) for r in rows],
        next_cursor=next_cursor,
        has_more=next_cursor is not None,
    )


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(*, dataset: DatasetDep) -> DatasetOut:
    """One dataset with its validation summary."""
    return DatasetOut.model_validate(dataset)
