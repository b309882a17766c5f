"""Deployment shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.schemas import InputModel, OutputModel


class DeploymentCreate(InputModel):
    artifact_id: str = Field(min_length=1, max_length=40)
    max_batch_size: int | None = Field(default=None, ge=1, le=512)
    max_wait_ms: float | None = Field(default=None, ge=0, le=1000)


class DeploymentOut(OutputModel):
    id: str
    artifact_id: str
    status: str
    config: dict[str, Any]
    error_message: str | None
    created_at: datetime
    updated_at: datetime
