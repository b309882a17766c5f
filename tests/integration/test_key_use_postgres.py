"""API-key use stamps on Postgres: recording `last_used_at` must not hold the key's row lock
for the length of a request.

The stamp used to be written in the request's own transaction, so a second request with the
same key, arriving while the first was still open, waited on the row lock until the first
committed (once a minute, when the stamp was stale). Here a request's
transaction is left open after authenticating, and a second request with the same key must
finish meanwhile; the stamp itself must still be recorded.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.db.migrate import upgrade
from app.db.models import ApiKey, utcnow
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.tenants import service as tenants

pytestmark = pytest.mark.integration


def test_a_request_left_open_does_not_block_the_same_keys_next_request(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url, pool_size=4)
    factory = make_sessionmaker(engine)
    try:
        with unit_of_work(factory) as session:
            tenant = tenants.create_tenant(session, "stamp")
            key_row, plaintext = tenants.create_api_key(session, tenant.id)
            key_id = key_row.id
        header = f"Bearer {plaintext}"
        with unit_of_work(factory) as session:  # an old stamp: the next use must rewrite it
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(last_used_at=utcnow() - timedelta(hours=1))
            )

        first = factory()
        _, key = tenants.authenticate(first, header)
        tenants.record_use(factory, key)
        first.execute(select(ApiKey.id)).all()  # the request goes on; its transaction is open

        done = threading.Event()
        errors: list[BaseException] = []

        def second_request() -> None:
            try:
                with unit_of_work(factory) as session:
                    _, key = tenants.authenticate(session, header)
                    tenants.record_use(factory, key)
                    session.execute(select(ApiKey.id)).all()
                done.set()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=second_request, daemon=True)
        thread.start()
        thread.join(timeout=20)
        finished_while_first_open = done.is_set()
        first.commit()
        first.close()
        thread.join(timeout=20)

        assert not errors, errors
        assert finished_while_first_open, "the second request waited for the first to commit"
        with factory() as session:
            stamped = session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
        assert stamped is not None
        assert utcnow() - stamped < timedelta(minutes=1)
    finally:
        engine.dispose()
