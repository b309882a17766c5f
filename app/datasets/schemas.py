"""Dataset shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from app.schemas import OutputModel


class DatasetPurpose(StrEnum):
    """`labelled`: training / validation data, needs a label column with 2+ classes.
    `unlabelled`: a pool of text for semi-supervised learning; labels are optional."""

    LABELLED = "labelled"
    UNLABELLED = "unlabelled"


class DatasetOut(OutputModel):
    id: str
    name: str
    format: str
    size_bytes: int
    sha256: str
    rows: int
    labelled_rows: int
    has_pairs: bool
    summary: dict[str, Any]
    created_at: datetime
