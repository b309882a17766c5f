"""Errors the engine raises on purpose. Each carries a stable `code` the service stores on the job."""

from __future__ import annotations


class EngineError(Exception):
    """A failure with a machine-readable code and a message meant for the user."""

    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DatasetError(EngineError):
    """The dataset cannot be used: the message names the row, column or problem."""

    code = "invalid_dataset"


class DatasetTooLarge(DatasetError):
    """The dataset is over a row or size limit (the API answers 413, not 422)."""

    code = "dataset_too_large"


class ModelLoadError(EngineError):
    """The base model cannot be loaded (unknown name, unsafe format, unsupported architecture)."""

    code = "model_load_failed"


class SpecError(EngineError):
    """The spec is valid on its own but cannot be run on this model / data combination."""

    code = "invalid_spec"


class JobCancelled(EngineError):
    """Raised at a checkpoint when the caller asked to cancel."""

    code = "cancelled"
