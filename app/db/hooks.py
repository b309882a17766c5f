"""Actions tied to the outcome of a request's transaction.

The request's session is committed by the `SessionDep` dependency, after the route returns.
Some effects must wait for that commit (enqueueing a job: a worker must never receive the
id of a row it cannot see yet) and some must undo work outside the database when the
transaction is rolled back (deleting an uploaded file whose row was never committed). Services
register them here; `app.deps.get_session` runs them.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session

log = structlog.get_logger(__name__)

_COMMIT = "sec_after_commit"
_ROLLBACK = "sec_after_rollback"

Hook = Callable[[], None]


def on_commit(session: Session, hook: Hook) -> None:
    session.info.setdefault(_COMMIT, []).append(hook)


def on_rollback(session: Session, hook: Hook) -> None:
    session.info.setdefault(_ROLLBACK, []).append(hook)


def has_hooks(session: Session) -> bool:
    return bool(session.info.get(_COMMIT) or session.info.get(_ROLLBACK))


def run_after_commit(session: Session) -> None:
    _run(session, _COMMIT)


def run_after_rollback(session: Session) -> None:
    _run(session, _ROLLBACK)


def _run(session: Session, which: str) -> None:
    hooks: list[Hook] = session.info.pop(which, [])
    # Hooks of the other outcome are dropped: they belonged to this transaction too.
    session.info.pop(_ROLLBACK if which == _COMMIT else _COMMIT, None)
    for hook in hooks:
        # The transaction's outcome is already decided; a failing hook must not turn a
        # committed request into an error response, so it is logged and the rest still run.
        try:
            hook()
        except Exception:
            log.exception("transaction_hook_failed", hook=which)
