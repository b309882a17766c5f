"""Deployment and prediction shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Discriminator, Field, StrictStr, Tag, field_validator

from app.schemas import InputModel, OutputModel


class DeploymentCreate(InputModel):
    artifact_id: str = Field(min_length=1, max_length=40)
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="Most inputs run together in one batch (the deployment may pick fewer"
        " from the model's time per input, measured when it loads).",
    )
    max_wait_ms: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Longest time an idle model waits for a batch to fill (default 0: a lone"
        " request runs at once; batches still form from what arrives while one runs).",
    )


class DeploymentOut(OutputModel):
    id: str
    artifact_id: str
    status: str
    config: dict[str, Any]
    error_message: str | None
    created_at: datetime
    updated_at: datetime


class PairInput(InputModel):
    """A sentence pair, for pair tasks (NLI, paraphrase...)."""

    text: StrictStr
    text_pair: StrictStr


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "an array"}


def _input_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "pair"
    return None  # reported by the list validator below, with the position


PredictInput = Annotated[
    Annotated[StrictStr, Tag("text")] | Annotated[PairInput, Tag("pair")],
    Discriminator(_input_kind),
]


class PredictRequest(InputModel):
    inputs: list[PredictInput] = Field(
        description='Texts ("...") or pairs ({"text": "...", "text_pair": "..."}), mixed freely.'
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _each_is_text_or_pair(cls, value: Any) -> Any:
        """Name the position and the JSON type of a wrong input, rather than pydantic's
        'unable to extract tag' for the union."""
        if not isinstance(value, list):
            raise ValueError("must be an array of texts or {text, text_pair} objects")
        if not value:
            raise ValueError("must hold at least one input")
        for i, item in enumerate(value):
            if _input_kind(item) is None:
                kind = "null" if item is None else _JSON_TYPES.get(type(item), type(item).__name__)
                raise ValueError(
                    f"inputs[{i}] is {kind}; each input must be a string or an object"
                    ' {"text": ..., "text_pair": ...}'
                )
        return value


class PredictionOut(OutputModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(OutputModel):
    deployment_id: str
    predictions: list[PredictionOut] = Field(description="One per input, in input order.")
