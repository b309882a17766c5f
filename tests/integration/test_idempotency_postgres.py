"""`Idempotency-Key` on Postgres, where the key is claimed with `INSERT ... ON CONFLICT DO
NOTHING` and concurrent requests really race (the unit tests in tests/security run on SQLite,
whose writers are serialised).

Each round sends the same submit with the same key from several threads at once: exactly one
job is created, and every other answer is either the replay of that job (201, marked
`Idempotent-Replayed`) or 409 while the first is still in flight. Never a second job, never a
5xx.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db.models import Job
from tests.reliability.harness import chaos_settings, figure, stack

pytestmark = pytest.mark.integration

ROUNDS, CLIENTS = 10, 6


def test_same_key_racing_on_postgres_creates_one_job(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    with stack(tmp_path, settings) as s:
        answers: list[tuple[int, str | None, str | None]] = []
        for _ in range(ROUNDS):
            key = uuid.uuid4().hex
            start = threading.Barrier(CLIENTS)
            results: list[httpx.Response] = []

            def post(
                key: str = key,
                start: threading.Barrier = start,
                results: list[httpx.Response] = results,
            ) -> None:
                start.wait()
                results.append(
                    s.client.post(
                        "/v1/jobs",
                        headers={**s.headers, "Idempotency-Key": key},
                        json={"dataset": s.dataset_id},
                    )
                )

            threads = [threading.Thread(target=post) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert len(results) == CLIENTS
            created = {r.json()["id"] for r in results if r.status_code == 201}
            assert len(created) == 1, [(r.status_code, r.text) for r in results]
            for r in results:
                assert r.status_code in (201, 409), r.text
                replayed = r.headers.get("idempotent-replayed")
                answers.append((r.status_code, replayed, r.json().get("id")))
            # The replay works after the race too, and a different body is refused.
            again = s.client.post(
                "/v1/jobs",
                headers={**s.headers, "Idempotency-Key": key},
                json={"dataset": s.dataset_id},
            )
            assert again.status_code == 201, again.text
            assert again.json()["id"] in created
            assert again.headers.get("idempotent-replayed") == "true"
            other = s.client.post(
                "/v1/jobs",
                headers={**s.headers, "Idempotency-Key": key},
                json={"dataset": s.dataset_id, "seed": 7},
            )
            assert other.status_code == 422, other.text
            assert other.json()["error"]["code"] == "idempotency_key_reused"
        with s.sessions() as session:
            jobs = session.scalar(select(func.count()).select_from(Job))
    assert jobs == ROUNDS
    figure(
        "idempotency_race_postgres",
        rounds=ROUNDS,
        clients_per_round=CLIENTS,
        jobs_created=jobs,
        first=sum(1 for code, replayed, _ in answers if code == 201 and replayed is None),
        replayed=sum(1 for code, replayed, _ in answers if code == 201 and replayed == "true"),
        conflicts_409=sum(1 for code, _, _ in answers if code == 409),
    )
