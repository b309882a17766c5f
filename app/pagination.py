"""Keyset (cursor) pagination over `created_at, id`, newest first.

Offsets skip or repeat rows when new ones arrive between pages; a keyset cursor does not.
The cursor is opaque to clients (base64 of the last row's timestamp and id).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import InvalidInput

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# The integer cursors (event ids, controller steps: `after`, `after_step`, `trace_after`,
# `Last-Event-ID`) are compared with 64-bit database integers. A larger one would overflow in
# the driver (a 500, or a stream that dies after its headers); every route declares this bound
# instead, so a value past it is a 422 that names the parameter.
CURSOR_MAX = 2**63 - 1


class Keyed(Protocol):
    id: Any
    created_at: Any


R = TypeVar("R", bound=Keyed)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "id": row_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return datetime.fromisoformat(data["t"]), str(data["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("invalid cursor: pass back a next_cursor value unchanged") from exc


def paginate(
    session: Session,
    stmt: Select[R],
    created_col: InstrumentedAttribute[datetime],
    id_col: InstrumentedAttribute[str],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[R], str | None]:
    """Run `stmt` one page at a time. Returns the rows and the cursor of the next page."""
    if cursor:
        t, last_id = decode_cursor(cursor)
        stmt = stmt.where(or_(created_col < t, and_(created_col == t, id_col < last_id)))
    rows = session.scalars(stmt.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    last = page[-1]
    return page, encode_cursor(last.created_at, last.id)
