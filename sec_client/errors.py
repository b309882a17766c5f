"""Exceptions the client raises. Every API error carries the HTTP status and the API's own
`{"error": {"code", "message"}}`, so callers (and the CLI) can show the server's words."""

from __future__ import annotations


class SecError(Exception):
    """Base class of everything this client raises on purpose."""


class SecAPIError(SecError):
    """The API answered with an error status."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{message} (HTTP {status_code} {code})")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class SecConnectionError(SecError):
    """The API could not be reached (refused, DNS, TLS, timeout)."""


class ChecksumMismatch(SecError):
    """A download's sha256 differs from the one the API announced; the file was removed."""


class WaitTimeout(SecError):
    """A wait (job, deployment) ran out of time before reaching a final state."""
