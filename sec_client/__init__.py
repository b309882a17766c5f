"""The SEC Python client: typed access to the compression service's REST API."""

from sec_client.client import SecClient, raise_for_error
from sec_client.errors import (
    ChecksumMismatch,
    SecAPIError,
    SecConnectionError,
    SecError,
    WaitTimeout,
)
from sec_client.models import (
    Artifact,
    Dataset,
    Deployment,
    Job,
    JobEvent,
    JobSnapshot,
    JobStatusUpdate,
    Model,
    Plan,
    Prediction,
    StreamEnd,
    TraceRow,
)

__all__ = [
    "Artifact",
    "ChecksumMismatch",
    "Dataset",
    "Deployment",
    "Job",
    "JobEvent",
    "JobSnapshot",
    "JobStatusUpdate",
    "Model",
    "Plan",
    "Prediction",
    "SecAPIError",
    "SecClient",
    "SecConnectionError",
    "SecError",
    "StreamEnd",
    "TraceRow",
    "WaitTimeout",
    "raise_for_error",
]
