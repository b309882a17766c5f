"""`Idempotency-Key` for POST requests (IETF draft-ietf-httpapi-idempotency-key-header).

- First request with a key: a row is committed *in its own transaction* marking the key
  in flight, so a concurrent retry sees it; the response is then stored in the request's
  transaction, atomically with the effect, so "effect without recorded response" cannot
  happen (`begin` / `complete`).
- A route whose whole effect is one short transaction (submitting a job) instead inserts the
  row already completed, in the request's own transaction, before its effect
  (`claim_in_transaction`): the effect and its recorded response commit or roll back
  together, with no side transaction and no completion update. A concurrent request with
  the same key waits on the row's unique index until that transaction ends (Postgres; SQLite
  serialises writers), then replays the response, or claims the key if it rolled back.
- Same key, same body, after completion: the stored response is replayed (no second effect).
- Same key, different body: 422. Same key while the first is still in flight: 409.
- If the first request fails, its key row is deleted (the effect was rolled back too), so
  the client may retry with the same key.
Keys are scoped per tenant. An in-flight row older than `STALE_IN_FLIGHT` belongs to a
request whose process died; it is taken over. Completed keys expire after `KEY_TTL`.

Every POST that changes state takes the header. Uploads are fingerprinted by the file's
sha256 and the form fields (not the raw multipart body, whose boundary is random per try).
`POST /v1/keys` replays without the secret: the plaintext key is never stored, not even here.
`predict` changes nothing, so a retry is already safe; it does not store responses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Executable, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.db.hooks import on_rollback
from app.db.models import IdempotencyKey, utcnow
from app.errors import Conflict, InvalidInput

KEY_TTL = timedelta(hours=24)
STALE_IN_FLIGHT = timedelta(minutes=5)
MAX_KEY_LENGTH = 255


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_KEY_LENGTH,
        description="Retry safely: the same key and body replay the first response",
    ),
]


def file_sha256(f: IO[bytes]) -> str:
    """The upload's digest, for its fingerprint; rewinds the file for the route to read."""
    f.seek(0)
    digest = hashlib.sha256()
    while chunk := f.read(1024 * 1024):
        digest.update(chunk)
    f.seek(0)
    return digest.hexdigest()


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def request_fingerprint(method: str, path: str, payload: Any) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "payload": payload}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentRequest:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        tenant_id: str,
        key: str,
        method: str,
        path: str,
        fingerprint: str,
    ) -> None:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidInput(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
            )
        self._factory = factory
        self.tenant_id = tenant_id
        self.key = key
        self.method = method
        self.path = path
        self.fingerprint = fingerprint
        self._row_id: int | None = None

    def begin(self, session: Session) -> Replay | None:
        """Claim the key, or return the response to replay. `session` is the request's own
        session: if it rolls back, the claim is released.

        The common case (a new key) is one short transaction: an insert that does nothing on
        a conflict. Only when the key exists is the row read, to replay or refuse."""
        for _ in range(2):
            with self._factory() as own, own.begin():
                row_id = own.scalar(
                    _claim_statement(own.get_bind().dialect.name), self._row(in_flight=True)
                )
                if row_id is None:
                    row = own.scalar(
                        select(IdempotencyKey).where(
                            IdempotencyKey.tenant_id == self.tenant_id,
                            IdempotencyKey.key == self.key,
                        )
                    )
                    if row is not None:
                        replay = self._existing(own, row)
                        if replay is not None:
                            return replay
                    continue  # an expired or abandoned row was deleted, or its claim released
            self._row_id = row_id
            on_rollback(session, self._release)
            return None
        raise Conflict(
            "a request with this Idempotency-Key is in progress; retry later",
            code="idempotency_key_in_use",
        )

    def claim_in_transaction(
        self, session: Session, status_code: int, body: dict[str, Any]
    ) -> Replay | None:
        """Claim the key with its response already recorded, in the request's transaction
        (see the module docstring): None when this request holds the key (its transaction
        must then make the effect that `body` describes), else the response to replay.
        Refuses like `begin` (422 for another body, 409 while a `begin` claim is in flight)."""
        conn = session.connection()
        for _ in range(3):
            row_id = conn.scalar(
                _claim_statement(conn.dialect.name),
                self._row(in_flight=False, response_status=status_code, response_body=body),
            )
            if row_id is not None:
                self._row_id = row_id
                return None
            row = session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.tenant_id == self.tenant_id, IdempotencyKey.key == self.key
                )
            )
            if row is not None:
                replay = self._existing(session, row)
                if replay is not None:
                    return replay
                session.flush()  # the expired or abandoned row's delete, before the next claim
        raise Conflict(
            "a request with this Idempotency-Key is in progress; retry later",
            code="idempotency_key_in_use",
        )

    def _row(self, **values: Any) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "key": self.key,
            "method": self.method,
            "path": self.path,
            "request_hash": self.fingerprint,
            "created_at": utcnow(),
            **values,
        }

    def _existing(self, own: Session, row: IdempotencyKey) -> Replay | None:
        now = utcnow()
        abandoned = row.in_flight and now - row.created_at > STALE_IN_FLIGHT
        expired = not row.in_flight and now - row.created_at > KEY_TTL
        if abandoned or expired:
            own.delete(row)
            return None
        if row.request_hash != self.fingerprint:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                code="idempotency_key_reused",
            )
        if row.in_flight or row.response_status is None:
            raise Conflict(
                "a request with this Idempotency-Key is in progress; retry later",
                code="idempotency_key_in_use",
            )
        return Replay(status_code=row.response_status, body=row.response_body or {})

    def complete(self, session: Session, status_code: int, body: dict[str, Any]) -> None:
        """Record the response in the request's transaction (atomic with the effect)."""
        assert self._row_id is not None, "begin() must claim the key first"
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == self._row_id)
            .values(in_flight=False, response_status=status_code, response_body=body)
        )

    def _release(self) -> None:
        if self._row_id is None:
            return
        with self._factory() as own, own.begin():
            own.execute(delete(IdempotencyKey).where(IdempotencyKey.id == self._row_id))


_UNIQUE = ["tenant_id", "key"]
_CLAIMS: dict[str, Executable] = {
    "postgresql": postgresql.insert(IdempotencyKey)
    .on_conflict_do_nothing(index_elements=_UNIQUE)
    .returning(IdempotencyKey.id),
    "sqlite": sqlite.insert(IdempotencyKey)
    .on_conflict_do_nothing(index_elements=_UNIQUE)
    .returning(IdempotencyKey.id),
}


def _claim_statement(dialect: str) -> Executable:
    """`INSERT ... ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id` (values bound at
    execution): the new row's id, or no row when the key is already taken (Postgres waits
    for a concurrent claimant to commit or roll back first, so the read that follows sees
    its outcome). Built once per dialect."""
    try:
        return _CLAIMS[dialect]
    except KeyError:  # pragma: no cover
        raise RuntimeError(f"unsupported database dialect {dialect!r}") from None


def for_request(
    key: str | None, request: Request, tenant_id: str, payload: Any
) -> IdempotentRequest | None:
    """The request's key, validated and fingerprinted, not yet claimed (None without a key):
    for a route that claims it with `claim_in_transaction`."""
    if key is None:
        return None
    path = request.url.path
    return IdempotentRequest(
        request.app.state.sec.side_sessionmaker,
        tenant_id=tenant_id,
        key=key,
        method="POST",
        path=path,
        fingerprint=request_fingerprint("POST", path, payload),
    )


def start(
    key: str | None,
    *,
    factory: sessionmaker[Session],
    session: Session,
    tenant_id: str,
    path: str,
    payload: Any,
) -> IdempotentRequest | Replay | None:
    """For a POST route: None without a key; the stored response to replay; or the claimed
    request, whose `complete()` the route calls with its response."""
    if key is None:
        return None
    request = IdempotentRequest(
        factory,
        tenant_id=tenant_id,
        key=key,
        method="POST",
        path=path,
        fingerprint=request_fingerprint("POST", path, payload),
    )
    return request.begin(session) or request


def begin(
    key: str | None, request: Request, session: Session, tenant_id: str, payload: Any
) -> IdempotentRequest | JSONResponse | None:
    """What a POST route calls first: None without a key; the stored response to send back
    (a replay); or the claimed request, whose `complete()` the route calls with its answer.
    Claims go through the side pool (`AppState.side_sessionmaker`)."""
    claimed = start(
        key,
        factory=request.app.state.sec.side_sessionmaker,
        session=session,
        tenant_id=tenant_id,
        path=request.url.path,
        payload=payload,
    )
    return replay_response(claimed) if isinstance(claimed, Replay) else claimed


def replay_response(replay: Replay) -> JSONResponse:
    return JSONResponse(
        replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"}
    )
