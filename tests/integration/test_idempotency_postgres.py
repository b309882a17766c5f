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


SUBMITTERS, CAP = 8, 3


def test_concurrent_submits_of_one_tenant_on_postgres_keep_the_cap(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Submits with different keys for one tenant, all at once: each claims its key in its own
    transaction (a foreign key to the tenant) and then takes the tenant's row lock, so they
    must neither deadlock nor pass the cap. Exactly CAP are created, the rest answer 429."""
    settings = chaos_settings(tmp_path, postgres_url, redis_url, max_concurrent_jobs_per_tenant=CAP)
    with stack(tmp_path, settings) as s:
        for _ in range(ROUNDS // 2):
            start = threading.Barrier(SUBMITTERS)
            results: list[httpx.Response] = []

            def post(
                start: threading.Barrier = start, results: list[httpx.Response] = results
            ) -> None:
                start.wait()
                results.append(
                    s.client.post(
                        "/v1/jobs",
                        headers={**s.headers, "Idempotency-Key": uuid.uuid4().hex},
                        json={"dataset": s.dataset_id},
                    )
                )

            threads = [threading.Thread(target=post) for _ in range(SUBMITTERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            codes = sorted(r.status_code for r in results)
            assert codes == [201] * CAP + [429] * (SUBMITTERS - CAP), [r.text for r in results]
            for r in results:  # free the slots for the next round
                if r.status_code == 201:
                    cancel = s.client.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=s.headers)
                    assert cancel.status_code == 200, cancel.text
        with s.sessions() as session:
            jobs = session.scalar(select(func.count()).select_from(Job))
    assert jobs == CAP * (ROUNDS // 2)
