"""Shapes shared by every domain: the error body, list pages, and the input/output bases."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error (no mass assignment, no silent typos)."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """A page of a list. Pass `next_cursor` back as `?cursor=` for the next page."""

    data: list[T]
    next_cursor: str | None = None
    has_more: bool = False


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "Missing, malformed, unknown or revoked API key"},
    404: {"model": ErrorResponse, "description": "Not found (or owned by another tenant)"},
}
