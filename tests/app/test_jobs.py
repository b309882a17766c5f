"""Jobs: validated creation, enqueue after commit, the per-tenant cap, idempotency keys,
pagination, cancel transitions, events (JSON and SSE) and the trace."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import anyio
import pytest
from fastapi.sse import ServerSentEvent
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import (
    Dataset,
    IdempotencyKey,
    Job,
    JobEvent,
    JobStatus,
    Model,
    TraceRow,
    utcnow,
)
from app.db.session import unit_of_work
from app.jobs import repository as repo
from app.jobs.stream import job_event_stream
from tests.app.conftest import (
    TenantKey,
    count_rows,
    set_status,
    submit_job,
    upload_dataset,
)
from tests.app.model_archives import model_files, zip_bytes
from tests.doubles import RecordingJobQueue

pytestmark = pytest.mark.unit


def test_create_stores_the_spec_then_enqueues(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    db: sessionmaker[Session],
    job_queue: RecordingJobQueue,
) -> None:
    r = submit_job(client, tenant_a, dataset_a, budget={"max_minutes": 5, "label_budget": 0.7})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["base_model"] == "minilm-l6"
    assert body["dataset_id"] == dataset_a
    assert body["spec"]["budget"] == {
        "max_minutes": 5.0,
        "hard_cap_minutes": None,  # 2 x max_minutes
        "label_budget": 0.7,
    }
    assert body["spec"]["controller"]["lambda1"] == 0.5  # defaults are stored, for reproducibility
    assert body["error"] is None
    assert body["artifact_id"] is None
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert job_queue.sent == [(body["id"], "gpu")]
    with db() as s:
        job = s.get(Job, body["id"])
        assert job is not None
        assert job.queue == "gpu"
        assert job.max_attempts == 3
        assert job.enqueued_at is not None
    events = client.get(f"/v1/jobs/{body['id']}/events", headers=tenant_a.headers).json()
    assert [(e["kind"], e["data"]["status"]) for e in events["data"]] == [("job.queued", "queued")]


def test_submit_resolves_the_inputs_once_and_stores_them_on_the_job(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    """What the worker fetches: the datasets' and the uploaded model's blobs, each with the
    sha256 recorded at upload, looked up for the tenant at submit; a built-in model stays its
    name. Storage keys never reach the API's answer."""
    pool = upload_dataset(client, tenant_a, b"text\na\nb\n", purpose="unlabelled").json()["id"]
    files = model_files()
    model = client.post(
        "/v1/models",
        headers=tenant_a.headers,
        files={"file": ("m.zip", zip_bytes(files), "application/octet-stream")},
    ).json()["id"]
    builtin = submit_job(client, tenant_a, dataset_a, unlabelled_dataset=pool)
    uploaded = submit_job(client, tenant_a, dataset_a, base_model=model)
    assert builtin.status_code == uploaded.status_code == 201, uploaded.text
    assert "inputs" not in builtin.json()
    with db() as s:
        blobs = {
            d.id: {"key": d.storage_key, "sha256": d.sha256} for d in s.scalars(select(Dataset))
        }
        row = s.get_one(Model, model)
        archive = {"key": row.storage_key, "sha256": row.sha256}
        first = s.get_one(Job, builtin.json()["id"]).inputs
        second = s.get_one(Job, uploaded.json()["id"]).inputs
    assert first == {
        "model": "minilm-l6",
        "train": blobs[dataset_a],
        "validation": None,
        "unlabelled": blobs[pool],
    }
    assert blobs[dataset_a]["key"] == f"datasets/{tenant_a.id}/{dataset_a}.csv"
    assert archive["key"] == f"models/{tenant_a.id}/{model}.archive"
    assert second is not None
    assert (second["model"], second["train"]) == (archive, blobs[dataset_a])


def test_a_dry_run_is_a_job_whose_metrics_hold_the_plan_and_that_has_no_artifact(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    db: sessionmaker[Session],
    job_queue: RecordingJobQueue,
) -> None:
    r = submit_job(client, tenant_a, dataset_a, dry_run=True, budget={"max_minutes": 2})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json()["spec"]["dry_run"] is True
    assert job_queue.sent == [(job_id, "gpu")]  # the queue (device kind) a real job runs on
    plan = {"fits": False, "predicted_minutes": 3.2, "minimum_minutes": 4.1}
    with unit_of_work(db) as s:  # what the worker writes when the dry run ends
        job = s.get_one(Job, job_id)
        job.status, job.progress = JobStatus.SUCCEEDED.value, 1.0
        job.metrics = {"plan": plan, "warnings": ["budget too small: 2 min"]}

    got = client.get(f"/v1/jobs/{job_id}", headers=tenant_a.headers).json()
    assert got["status"] == "succeeded"
    assert got["metrics"] == {"plan": plan, "warnings": ["budget too small: 2 min"]}
    assert got["artifact_id"] is None
    listed = client.get("/v1/jobs", headers=tenant_a.headers).json()["data"]
    assert [(j["id"], j["artifact_id"]) for j in listed] == [(job_id, None)]
    artifacts = client.get(f"/v1/jobs/{job_id}/artifacts", headers=tenant_a.headers)
    assert (artifacts.status_code, artifacts.json()["data"]) == (200, [])


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        ({"foo": 1}, 422, "unknown field 'foo'"),
        ({"techniques": {"ada": {"strength": 2}}}, 422, "unknown field 'techniques.ada.strength'"),
        ({"base_model": "gpt-17"}, 422, "unknown base_model 'gpt-17'"),
        ({"base_model": "mdl_doesnotexist"}, 404, "model 'mdl_doesnotexist' not found"),
        ({"budget": {"max_minutes": -1}}, 422, "budget.max_minutes"),
        (
            {"budget": {"label_budget": 0.5}, "techniques": {"tal": {"enabled": False}}},
            422,
            "label_budget < 1 needs techniques.tal.enabled",
        ),
        ({"validation_dataset": "ds_nope"}, 404, "validation_dataset: dataset 'ds_nope' not found"),
        ({"dry_run": "maybe"}, 422, "dry_run"),
    ],
    ids=[
        "unknown-field",
        "unknown-nested",
        "unknown-base",
        "missing-model",
        "range",
        "combo",
        "val",
        "dry-run-not-bool",
    ],
)
def test_bad_specs_are_refused_and_nothing_is_stored(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    db: sessionmaker[Session],
    job_queue: RecordingJobQueue,
    extra: dict[str, Any],
    status: int,
    words: str,
) -> None:
    r = submit_job(client, tenant_a, dataset_a, **extra)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    if status == 422 and r.json()["error"]["code"] == "validation_error":
        assert r.json()["error"]["detail"]  # pydantic's list is kept
    assert count_rows(db, Job) == 0
    assert job_queue.sent == []


def test_unlabelled_dataset_cannot_be_the_training_set(
    client: TestClient, tenant_a: TenantKey, db: sessionmaker[Session]
) -> None:
    pool = upload_dataset(client, tenant_a, b"text\na\nb\n", purpose="unlabelled").json()["id"]
    r = submit_job(client, tenant_a, pool)
    assert r.status_code == 422
    assert "label" in r.json()["error"]["message"]
    labelled = upload_dataset(client, tenant_a).json()["id"]
    ok = submit_job(client, tenant_a, labelled, unlabelled_dataset=pool)
    assert ok.status_code == 201, ok.text


def test_other_tenants_dataset_is_404(
    client: TestClient, tenant_b: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    r = submit_job(client, tenant_b, dataset_a)
    assert r.status_code == 404
    assert dataset_a in r.json()["error"]["message"]
    assert count_rows(db, Job) == 0


def test_concurrent_job_cap_is_429(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey, dataset_a: str
) -> None:
    ids = [submit_job(client, tenant_a, dataset_a).json()["id"] for _ in range(3)]
    r = submit_job(client, tenant_a, dataset_a)
    assert r.status_code == 429
    assert "limit per tenant is 3" in r.json()["error"]["message"]
    # Another tenant is not affected, and a finished job frees a slot.
    ds_b = upload_dataset(client, tenant_b).json()["id"]
    assert submit_job(client, tenant_b, ds_b).status_code == 201
    assert client.post(f"/v1/jobs/{ids[0]}/cancel", headers=tenant_a.headers).status_code == 200
    assert submit_job(client, tenant_a, dataset_a).status_code == 201


def test_enqueue_failure_keeps_the_job_queued_for_the_reaper(
    settings: Any, db: sessionmaker[Session], tenant_a: TenantKey
) -> None:
    from app.main import create_app

    class DownQueue:
        def enqueue(self, job_id: str, queue: str) -> None:
            raise ConnectionError("broker down")

    with TestClient(create_app(settings, job_queue=DownQueue())) as c:
        ds = upload_dataset(c, tenant_a).json()["id"]
        r = submit_job(c, tenant_a, ds)
    assert r.status_code == 201
    with db() as s:
        job = s.get(Job, r.json()["id"])
        assert job is not None
        assert job.status == "queued"
        assert job.enqueued_at is None


# --- Idempotency-Key ---------------------------------------------------------------------


def test_same_key_same_body_replays_without_a_second_job(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    db: sessionmaker[Session],
    job_queue: RecordingJobQueue,
) -> None:
    first = submit_job(client, tenant_a, dataset_a, seed=3, idempotency_key="k-1")
    again = submit_job(client, tenant_a, dataset_a, seed=3, idempotency_key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert count_rows(db, Job) == 1
    assert len(job_queue.sent) == 1


def test_same_key_different_body_is_422(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    assert submit_job(client, tenant_a, dataset_a, seed=1, idempotency_key="k").status_code == 201
    r = submit_job(client, tenant_a, dataset_a, seed=2, idempotency_key="k")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert count_rows(db, Job) == 1


def test_key_in_flight_is_409(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    from app.idempotency import request_fingerprint

    payload = {"dataset": dataset_a}
    with unit_of_work(db) as s:
        s.add(
            IdempotencyKey(
                tenant_id=tenant_a.id,
                key="busy",
                method="POST",
                path="/v1/jobs",
                request_hash=request_fingerprint("POST", "/v1/jobs", payload),
                in_flight=True,
            )
        )
    r = submit_job(client, tenant_a, dataset_a, idempotency_key="busy")
    assert r.status_code == 409
    assert "in progress" in r.json()["error"]["message"]
    assert count_rows(db, Job) == 0


def test_keys_are_scoped_per_tenant(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey, dataset_a: str
) -> None:
    ds_b = upload_dataset(client, tenant_b).json()["id"]
    a = submit_job(client, tenant_a, dataset_a, idempotency_key="shared")
    b = submit_job(client, tenant_b, ds_b, idempotency_key="shared")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_failed_request_releases_its_key(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    bad = submit_job(client, tenant_a, dataset_a, base_model="nope", idempotency_key="retry")
    assert bad.status_code == 422
    assert count_rows(db, IdempotencyKey) == 0
    good = submit_job(client, tenant_a, dataset_a, idempotency_key="retry")
    assert good.status_code == 201


def test_the_submit_answer_is_the_stored_job_and_its_replay(
    client: TestClient, tenant_a: TenantKey, dataset_a: str
) -> None:
    # The answer is built from the row's values before the insert (and stored with the key):
    # it must be exactly what a read of the job gives.
    first = submit_job(client, tenant_a, dataset_a, seed=5, idempotency_key="same")
    assert first.status_code == 201, first.text
    got = client.get(f"/v1/jobs/{first.json()['id']}", headers=tenant_a.headers)
    assert got.json() == first.json()
    again = submit_job(client, tenant_a, dataset_a, seed=5, idempotency_key="same")
    assert again.json() == first.json()


def test_an_expired_key_is_claimed_again(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    from app.idempotency import KEY_TTL

    first = submit_job(client, tenant_a, dataset_a, idempotency_key="old").json()["id"]
    with unit_of_work(db) as s:
        row = s.scalars(select(IdempotencyKey).where(IdempotencyKey.key == "old")).one()
        row.created_at = utcnow() - KEY_TTL - timedelta(minutes=1)
    second = submit_job(client, tenant_a, dataset_a, idempotency_key="old")
    assert second.status_code == 201, second.text
    assert second.headers.get("idempotent-replayed") is None
    assert second.json()["id"] != first
    assert count_rows(db, IdempotencyKey) == 1
    assert count_rows(db, Job) == 2


def test_a_refused_submit_over_the_cap_releases_its_key(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    ids = [submit_job(client, tenant_a, dataset_a).json()["id"] for _ in range(3)]
    over = submit_job(client, tenant_a, dataset_a, idempotency_key="later")
    assert over.status_code == 429
    assert count_rows(db, IdempotencyKey) == 0
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=tenant_a.headers)
    assert submit_job(client, tenant_a, dataset_a, idempotency_key="later").status_code == 201


# --- listing -------------------------------------------------------------------------------


def test_list_paginates_with_a_cursor_and_filters_by_status(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    ids = [submit_job(client, tenant_a, dataset_a).json()["id"] for _ in range(3)]
    set_status(db, ids[1], JobStatus.SUCCEEDED)
    seen: list[str] = []
    url = "/v1/jobs?limit=2"
    while True:
        page = client.get(url, headers=tenant_a.headers).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        url = f"/v1/jobs?limit=2&cursor={page['next_cursor']}"
    assert seen == ids[::-1]
    done = client.get("/v1/jobs?status=succeeded", headers=tenant_a.headers).json()
    assert [j["id"] for j in done["data"]] == [ids[1]]
    bad = client.get("/v1/jobs?status=exploded", headers=tenant_a.headers)
    assert bad.status_code == 422


# --- cancel --------------------------------------------------------------------------------


def test_cancel_transitions(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    queued = submit_job(client, tenant_a, dataset_a).json()["id"]
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=tenant_a.headers)
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None

    running = submit_job(client, tenant_a, dataset_a).json()["id"]
    set_status(db, running, JobStatus.RUNNING)
    r = client.post(f"/v1/jobs/{running}/cancel", headers=tenant_a.headers)
    assert r.json()["status"] == "cancel_requested"
    r = client.post(f"/v1/jobs/{running}/cancel", headers=tenant_a.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "cancel_requested"

    set_status(db, running, JobStatus.SUCCEEDED)
    r = client.post(f"/v1/jobs/{running}/cancel", headers=tenant_a.headers)
    assert r.status_code == 409
    assert "already succeeded" in r.json()["error"]["message"]
    r = client.post(f"/v1/jobs/{queued}/cancel", headers=tenant_a.headers)
    assert r.status_code == 409

    # One event a change, with the kinds the worker and the reaper use; none for a no-op.
    def kinds(job_id: str) -> list[tuple[str, str]]:
        page = client.get(f"/v1/jobs/{job_id}/events", headers=tenant_a.headers).json()
        return [(e["kind"], e["data"].get("status")) for e in page["data"]]

    assert kinds(queued) == [("job.queued", "queued"), ("job.cancelled", "cancelled")]
    assert kinds(running) == [
        ("job.queued", "queued"),
        ("job.cancel_requested", "cancel_requested"),
    ]


def test_a_cancel_that_loses_the_race_answers_from_the_row_as_it_is_now(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    """The job finishes between the route's read and the cancel's UPDATE: the UPDATE matches
    nothing, the row is read again, and the answer is the 409 of a finished job."""
    from app.jobs import state_machine

    job_id = submit_job(client, tenant_a, dataset_a).json()["id"]
    real_cancel = state_machine.cancel

    def finish_first(session: Session, job: Job, now: Any) -> bool:
        set_status(db, job_id, JobStatus.SUCCEEDED)
        return real_cancel(session, job, now)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_machine, "cancel", finish_first)
        r = client.post(f"/v1/jobs/{job_id}/cancel", headers=tenant_a.headers)
    assert r.status_code == 409
    assert "already succeeded" in r.json()["error"]["message"]


# --- events, SSE, trace --------------------------------------------------------------------


def add_events(db: sessionmaker[Session], job_id: str, n: int) -> None:
    with unit_of_work(db) as s:
        for i in range(n):
            s.add(JobEvent(job_id=job_id, kind="progress", message=f"step {i}", data={"i": i}))


def test_events_cursor(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session]
) -> None:
    add_events(db, job_a, 4)  # plus the "queued" event: 5 in all
    first = client.get(f"/v1/jobs/{job_a}/events?limit=3", headers=tenant_a.headers).json()
    assert len(first["data"]) == 3
    assert first["has_more"] is True
    rest = client.get(
        f"/v1/jobs/{job_a}/events?after={first['next_cursor']}", headers=tenant_a.headers
    ).json()
    assert [e["data"].get("i") for e in rest["data"]] == [2, 3]
    assert rest["has_more"] is False
    ids = [e["id"] for e in first["data"] + rest["data"]]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    empty = client.get(
        f"/v1/jobs/{job_a}/events?after={rest['next_cursor']}", headers=tenant_a.headers
    ).json()
    assert empty["data"] == []
    assert empty["next_cursor"] == rest["next_cursor"]


def test_cursors_past_a_database_integer_are_refused(
    client: TestClient, tenant_a: TenantKey, job_a: str
) -> None:
    huge = 2**63
    for url in (
        f"/v1/jobs/{job_a}/events?after={huge}",
        f"/v1/jobs/job_missing/events?after={huge}",  # refused before any lookup
        f"/v1/jobs/{job_a}/trace?after_step={10**30}",
    ):
        response = client.get(url, headers=tenant_a.headers)
        assert response.status_code == 422, url
    ok = client.get(f"/v1/jobs/{job_a}/events?after={huge - 1}", headers=tenant_a.headers)
    assert ok.status_code == 200


def parse_sse(raw: str) -> list[dict[str, str]]:
    events = []
    for block in raw.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            events.append(fields)
    return events


def test_sse_stream_sends_ids_and_ends_when_the_job_is_done(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session]
) -> None:
    add_events(db, job_a, 3)

    def finish() -> None:
        add_events(db, job_a, 1)
        set_status(db, job_a, JobStatus.SUCCEEDED)

    # The job finishes while the stream is open: the stream must pick up the late event and end.
    timer = threading.Timer(0.2, finish)
    timer.start()
    with client.stream("GET", f"/v1/jobs/{job_a}/events/stream", headers=tenant_a.headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.read().decode())
    timer.join()
    *job_events, end = events
    assert len(job_events) == 5
    assert [int(e["id"]) for e in job_events] == sorted(int(e["id"]) for e in job_events)
    assert end["event"] == "end"
    assert "succeeded" in end["data"]

    last_seen = job_events[2]["id"]
    headers = {**tenant_a.headers, "Last-Event-ID": last_seen}
    with client.stream("GET", f"/v1/jobs/{job_a}/events/stream", headers=headers) as r:
        resumed = parse_sse(r.read().decode())
    assert [e["id"] for e in resumed[:-1]] == [e["id"] for e in job_events[3:]]


def test_live_stream_sends_the_final_status_before_end(
    job_a: str, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job finishes between the stream's reads of its state and of its status; the
    `status` event with the final status must still come before `end` (a client's last
    progress callback otherwise says `running`)."""
    set_status(db, job_a, JobStatus.RUNNING)
    real_trace_after = repo.trace_after
    flipped = False

    def trace_after_then_finish(*args: Any, **kwargs: Any) -> Any:
        nonlocal flipped
        rows = real_trace_after(*args, **kwargs)
        if not flipped:
            flipped = True
            set_status(db, job_a, JobStatus.SUCCEEDED)
        return rows

    monkeypatch.setattr(repo, "trace_after", trace_after_then_finish)

    async def collect() -> list[ServerSentEvent]:
        stream = job_event_stream(db, job_a, after=0, poll_seconds=0.01, trace_after=-1)
        return [event async for event in stream]

    events = anyio.run(collect)
    assert flipped
    assert events[-1].event == "end"
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[-1] == "succeeded"


def test_trace_rows_in_step_order(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session]
) -> None:
    with unit_of_work(db) as s:
        for step in (2, 0, 1):
            s.add(
                TraceRow(
                    job_id=job_a,
                    step=step,
                    phase="compressing",
                    lambda1=0.5,
                    lambda2=0.5 + step / 10,
                    val_accuracy=0.8,
                    observation={"acc_drop": 0.01},
                    decision={"lambda2": "up"},
                    created_at=utcnow(),
                )
            )
    trace = client.get(f"/v1/jobs/{job_a}/trace", headers=tenant_a.headers).json()
    assert [r["step"] for r in trace["data"]] == [0, 1, 2]
    assert trace["data"][2]["lambda2"] == pytest.approx(0.7)
    assert trace["data"][0]["decision"] == {"lambda2": "up"}
    later = client.get(f"/v1/jobs/{job_a}/trace?after_step=1", headers=tenant_a.headers).json()
    assert [r["step"] for r in later["data"]] == [2]
