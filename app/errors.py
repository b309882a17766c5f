"""One error hierarchy for the API, rendered by one handler as `{"error": {"code", "message"}}`.

Services raise these; routers never build error responses by hand. `code` is stable and
machine-readable, `message` is for the user and names the problem (the field, the line, the
limit), because "bad request" alone helps nobody fix their upload.

Messages quote the ids and names the client sent (`job 'job_…' not found`), so a user sees
which one was wrong; a hostile client may send 10,000 characters of id. Every quoted value
in a message is cut to `ECHO_MAX_CHARS` and "…" where the message is made (`AppError`), so
no call site can forget it.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, ClassVar

from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ECHO_MAX_CHARS = 64

# A quoted value as `repr` writes it ('...' or "..."), not an apostrophe inside a word.
_QUOTED = re.compile(r"""(?<!\w)(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")


def echo(value: str) -> str:
    """`value` as an error message may show it: at most `ECHO_MAX_CHARS` characters and "…"."""
    return value if len(value) <= ECHO_MAX_CHARS else value[:ECHO_MAX_CHARS] + "…"


def _cut_quoted(match: re.Match[str]) -> str:
    quoted = match.group(0)
    if len(quoted) <= ECHO_MAX_CHARS + 2:
        return quoted
    try:
        value = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, str):
        return repr(echo(value))
    return quoted[: ECHO_MAX_CHARS + 1] + "…" + quoted[0]


def cut_echoed_values(message: str) -> str:
    """`message` with every quoted value longer than `ECHO_MAX_CHARS` cut (see `echo`)."""
    return _QUOTED.sub(_cut_quoted, message)


class AppError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = cut_echoed_values(message)
        super().__init__(message)
        self.message = message
        self.error_code = code or self.code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.error_code, "message": self.message}}


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class InvalidInput(AppError):
    """The request parsed, but its content cannot be used (bad dataset, unknown model...)."""

    status_code = 422
    code = "invalid_input"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_requests"


class InternalError(AppError):
    status_code = 500
    code = "internal_error"


class BodyLimitJSONMiddleware:
    """Starlette's request-body limit answers 413 with a plain-text body from inside the route
    (where exception handlers cannot see it). This rewrites that answer into our error shape,
    naming the limit, so every 4xx of the API looks the same to clients."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_wrapper(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    rewriting = True
                    limit = scope.get(MAX_BODY_SIZE_SCOPE_KEY)
                    body = PayloadTooLarge(
                        "request body too large"
                        + (f": the limit for this route is {limit} bytes" if limit else "")
                    ).body()
                    payload = json.dumps(body).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": payload})
                    return
            if rewriting:
                return  # the plain-text body was replaced above
            await send(message)

        await self.app(scope, receive, send_wrapper)
