"""Structured logs (structlog): JSON lines in production (`SEC_LOG_JSON=1`), readable text in dev.

What must never reach a log: API keys and dataset text. The request middleware logs method,
path, status and latency only (never headers, query strings or bodies), and a processor
masks anything shaped like one of our keys, as a second line of defence.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

_KEY_RE = re.compile(r"sec_[A-Za-z0-9_\-]{8,}")

log = structlog.get_logger("sec.api")


def _mask_keys(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in event.items():
        if isinstance(value, str) and "sec_" in value:
            event[name] = _KEY_RE.sub("sec_***", value)
    return event


def log_level(settings: Settings) -> int:
    return logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)


def configure_logging(settings: Settings) -> None:
    level = log_level(settings)
    logging.basicConfig(level=level, format="%(message)s")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_keys,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


class RequestLogMiddleware:
    """Pure ASGI middleware (unlike BaseHTTPMiddleware it does not buffer streamed responses,
    so SSE and downloads pass through untouched). Adds `X-Request-ID` to every response.
    `log_requests=False` (a level above INFO) skips the per-request line without building it."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if self.log_requests:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    latency_ms=round((time.perf_counter() - start) * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            # Echo only harmless ids: they end up in logs and response headers.
            if re.fullmatch(r"[A-Za-z0-9._\-]{1,64}", candidate):
                return candidate
    return None
