"""API key shapes. The plaintext appears only in `ApiKeyCreated`, once."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.schemas import InputModel, OutputModel


class ApiKeyCreate(InputModel):
    name: str = Field(default="default", min_length=1, max_length=200)


class ApiKeyOut(OutputModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str | None = Field(
        description="The secret key. Shown only in this response: store it now"
        " (null in an Idempotency-Key replay: the secret is never stored)."
    )


class TenantOut(OutputModel):
    id: str
    name: str
    created_at: datetime
