"""Errors of the serving engine. The deployment service maps them to HTTP answers."""

from __future__ import annotations


class ServingError(Exception):
    """Base class; `str(exc)` is a message fit for the user."""


class ModelLoadError(ServingError):
    """The artifact cannot be served: checksum mismatch, unsafe or incomplete archive,
    unreadable model. Permanent for that artifact, so the deployment is marked failed."""


class DeploymentGone(ServingError):
    """The deployment row disappeared (deleted) while it was being loaded."""


class QueueFull(ServingError):
    """The deployment's request queue cannot take the inputs; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatcherClosed(ServingError):
    """The model was unloaded (deleted or evicted) before these inputs ran."""
