"""Model shapes: built-in and uploaded models share one listing shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.db.models import Model
from sec_engine.models.builtin import BuiltinModel


class ModelOut(BaseModel):
    id: str  # the built-in name, or the uploaded model's `mdl_…` id: what `base_model` takes
    kind: Literal["builtin", "uploaded"]
    name: str
    description: str = ""
    architecture: str
    num_parameters: int | None
    available: bool
    size_bytes: int | None = None
    sha256: str | None = None
    details: dict[str, Any] = {}
    created_at: datetime | None = None

    @classmethod
    def from_builtin(cls, model: BuiltinModel, available: bool) -> ModelOut:
        return cls(
            id=model.name,
            kind="builtin",
            name=model.name,
            description=model.description,
            architecture=model.architecture,
            num_parameters=model.num_parameters,
            available=available,
        )

    @classmethod
    def from_row(cls, model: Model) -> ModelOut:
        return cls(
            id=model.id,
            kind="uploaded",
            name=model.name,
            architecture=model.architecture,
            num_parameters=model.num_parameters,
            available=True,
            size_bytes=model.size_bytes,
            sha256=model.sha256,
            details=model.details,
            created_at=model.created_at,
        )


class ModelList(BaseModel):
    data: list[ModelOut]
