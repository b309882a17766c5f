"""SecClient against the real API in-process: typed answers, the API's errors as exceptions,
idempotent submit, the live stream and wait_for_job, checked downloads, deploy and predict."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from sec_client import (
    ChecksumMismatch,
    Job,
    JobEvent,
    JobSnapshot,
    JobStatusUpdate,
    Plan,
    SecAPIError,
    SecClient,
    SecConnectionError,
    SecError,
    StreamEnd,
    TraceRow,
)
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import GOOD_CSV, TenantKey
from tests.client.conftest import finish_job, write_progress
from tests.client.inline_worker import InlineWorker
from tests.serving.tiny_artifact import LABELS, register_artifact, tiny_artifact

pytestmark = pytest.mark.unit


def test_upload_submit_get_list(sec: SecClient, tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(GOOD_CSV)
    dataset = sec.upload_dataset(path)
    assert dataset.id.startswith("ds_")
    assert dataset.rows == 4
    assert dataset.labelled_rows == 4

    job = sec.submit_job({"dataset": dataset.id, "budget": {"max_minutes": 5}})
    assert isinstance(job, Job)
    assert job.status == "queued"
    assert job.spec["budget"]["max_minutes"] == 5
    assert sec.get_job(job.id).id == job.id
    assert [j.id for j in sec.list_jobs().data] == [job.id]
    assert sec.list_jobs(status="succeeded").data == []
    assert sec.me().name == "tenant-a"


def test_same_idempotency_key_returns_the_same_job(sec: SecClient, dataset_a: str) -> None:
    first = sec.submit_job({"dataset": dataset_a}, idempotency_key="retry-1")
    again = sec.submit_job({"dataset": dataset_a}, idempotency_key="retry-1")
    other = sec.submit_job({"dataset": dataset_a})
    assert again.id == first.id
    assert other.id != first.id


def test_api_errors_carry_status_code_and_message(sec: SecClient, dataset_a: str) -> None:
    with pytest.raises(SecAPIError) as missing:
        sec.get_job("job_doesnotexist")
    assert missing.value.status_code == 404
    assert missing.value.code == "not_found"
    assert "job_doesnotexist" in missing.value.message

    with pytest.raises(SecAPIError) as invalid:
        sec.submit_job({"dataset": dataset_a, "budget": {"max_minutes": 5, "typo": 1}})
    assert invalid.value.status_code == 422
    assert "typo" in invalid.value.message


def test_bad_key_is_a_401(client, tenant_a: TenantKey) -> None:
    with (
        SecClient("http://testserver", tenant_a.key + "x", http=client) as bad,
        pytest.raises(SecAPIError) as exc,
    ):
        bad.list_jobs()
    assert exc.value.status_code == 401


def test_unreachable_server_is_a_connection_error() -> None:
    with (
        SecClient("http://127.0.0.1:9", "sec_x", timeout=2) as nowhere,
        pytest.raises(SecConnectionError, match="cannot reach"),
    ):
        nowhere.list_jobs()


def test_stream_carries_status_trace_events_then_end(
    sec: SecClient, job_a: str, db: sessionmaker[Session]
) -> None:
    write_progress(db, job_a, steps=3)
    items = []
    for item in sec.stream(job_a):
        if not items:  # the job finishes while the client is following it
            finish_job(db, job_a)
        items.append(item)
    assert isinstance(items[-1], StreamEnd)
    assert items[-1].status == "succeeded"
    trace = [i for i in items if isinstance(i, TraceRow)]
    assert [r.step for r in trace] == [0, 1, 2]
    assert trace[2].lambda2 == pytest.approx(0.7)
    statuses = [i for i in items if isinstance(i, JobStatusUpdate)]
    assert statuses[0].status == "running"
    assert statuses[0].phase == "compressing"
    assert statuses[-1].status == "succeeded"
    kinds = [i.kind for i in items if isinstance(i, JobEvent)]
    assert kinds[-1] == "job.succeeded"
    assert kinds.count("aip.step") == 3

    # Resuming after the second step and the last event sends only what came later.
    last_event = max(i.id for i in items if isinstance(i, JobEvent))
    resumed = list(sec.stream(job_a, after=last_event, trace_after=1))
    assert [i.step for i in resumed if isinstance(i, TraceRow)] == [2]
    assert not [i for i in resumed if isinstance(i, JobEvent)]


@pytest.mark.parametrize("use_stream", [True, False], ids=["sse", "polling"])
def test_wait_for_job_reports_progress(
    sec: SecClient, job_a: str, db: sessionmaker[Session], use_stream: bool
) -> None:
    write_progress(db, job_a, steps=2)
    seen: list[JobSnapshot] = []

    def callback(snapshot: JobSnapshot) -> None:
        if not seen:  # the job finishes while the client is waiting for it
            finish_job(db, job_a)
        seen.append(snapshot)

    job = sec.wait_for_job(
        job_a, progress_callback=callback, use_stream=use_stream, poll_interval=0.05
    )
    assert job.status == "succeeded"
    assert job.metrics["compressed"]["accuracy"] == 0.88
    assert any(s.phase == "compressing" and s.progress == 0.5 for s in seen)
    assert any(s.trace is not None and s.trace.step == 1 for s in seen)
    assert seen[-1].status == "succeeded"


def test_plan_is_a_dry_run_job_that_answers_with_the_plan(
    sec: SecClient, dataset_a: str, inline_worker: InlineWorker
) -> None:
    spec = {"dataset": dataset_a, "budget": {"max_minutes": 10}}
    plan = sec.plan(spec, idempotency_key="plan-1")
    assert isinstance(plan, Plan)
    assert plan.fits
    assert 0 < plan.predicted_minutes <= plan.budget_minutes == 10
    assert plan.teacher_steps > 0
    assert plan.student_steps > 0
    assert set(plan.predicted_seconds) >= {"calibration", "teacher", "compressing"}
    assert plan.minimum_minutes <= plan.full_minutes
    assert plan.warnings == []
    assert inline_worker.outcomes == ["succeeded"]

    job = sec.get_job(plan.job_id or "")
    assert job.spec["dry_run"] is True
    assert job.status == "succeeded"
    assert job.artifact_id is None
    assert sec.job_artifacts(job.id) == []
    kinds = [e.kind for e in sec.events(job.id).data]
    assert "plan" in kinds
    assert kinds[-1] == "job.succeeded"
    # The same key is the same dry run: no second job, the same plan.
    assert sec.plan(spec, idempotency_key="plan-1") == plan
    assert len(sec.list_jobs().data) == 1


def test_plan_too_small_for_the_budget_says_so_and_what_it_needs(
    sec: SecClient, dataset_a: str, inline_worker: InlineWorker
) -> None:
    inline_worker.step_s = 30.0
    plan = sec.plan({"dataset": dataset_a, "budget": {"max_minutes": 1}})
    assert not plan.fits
    assert plan.minimum_minutes > 1
    assert any("too small" in note for note in plan.notes)
    assert [w.startswith("budget too small") for w in plan.warnings] == [True]
    kinds = [e.kind for e in sec.events(plan.job_id or "").data]
    assert kinds.index("plan") < kinds.index("budget.too_small")


def test_a_failed_dry_run_raises_with_the_jobs_error(
    sec: SecClient, dataset_a: str, inline_worker: InlineWorker
) -> None:
    from sec_engine.errors import DatasetError

    inline_worker.fail_with = DatasetError("row 3 has no text")
    with pytest.raises(SecError, match="invalid_dataset: row 3 has no text"):
        sec.plan({"dataset": dataset_a})
    assert [j.status for j in sec.list_jobs().data] == ["failed"]


def test_plan_of_a_bad_spec_is_the_api_error(sec: SecClient, dataset_a: str) -> None:
    with pytest.raises(SecAPIError) as exc:
        sec.plan({"dataset": dataset_a, "budget": {"max_minutes": 0}})
    assert exc.value.status_code == 422
    assert sec.list_jobs().data == []


def test_download_checks_the_sha256(
    sec: SecClient,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tenant_a: TenantKey,
    tmp_path: Path,
) -> None:
    artifact_id, payload = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    assert [a.id for a in sec.job_artifacts(job_a)] == [artifact_id]
    out = tmp_path / "dl"
    out.mkdir()
    path = sec.download_artifact(artifact_id, out)
    assert path == out / f"{artifact_id}.tar.gz"
    assert path.read_bytes() == payload

    # The stored file no longer matches its record: refused, and nothing is left behind.
    stored = settings.var_dir / "store" / f"{tenant_a.id}/{job_a}/artifact.tar.gz"
    assert stored.is_file()
    stored.write_bytes(payload[:-1] + b"!")
    with pytest.raises(ChecksumMismatch):
        sec.download_artifact(artifact_id, tmp_path / "bad.tar.gz")
    assert not (tmp_path / "bad.tar.gz").exists()
    assert not (tmp_path / "bad.tar.gz.part").exists()


def test_deploy_waits_until_ready_then_predicts(
    sec: SecClient,
    client: TestClient,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tenant_a: TenantKey,
) -> None:
    artifact_id = register_artifact(db, settings, tenant_a.id, job_a, tiny_artifact())
    deployment = sec.deploy(artifact_id, max_batch_size=8, timeout=60)
    assert deployment.status == "ready"
    predictions = sec.predict(deployment.id, ["good great lovely", ("the film", "was fun")])
    assert len(predictions) == 2
    for p in predictions:
        assert p.label in LABELS
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-4)

    with pytest.raises(SecAPIError) as exc:
        sec.predict(deployment.id, [])
    assert exc.value.status_code == 422

    # Both requests were timed by the inference histogram.
    scraped = client.get("/metrics").text
    ok = [
        ln for ln in scraped.splitlines() if ln.startswith("sec_inference_duration_seconds_count")
    ]
    assert any('outcome="ok"' in ln and float(ln.rsplit(" ", 1)[1]) >= 1 for ln in ok), ok


def test_stream_skips_keepalive_comments_after_an_id() -> None:
    """httpx-sse turns a keep-alive comment that follows an `id:` into an empty message;
    the client must skip it rather than fail to parse it."""
    body = (
        'data: {"id": 1, "kind": "job.started", "message": "go", "created_at": "2026-01-01T00:00:00Z"}\n'
        "id: 1\n\n"
        ": ping\n\n"
        'event: end\ndata: {"status": "succeeded"}\nid: 1\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer sec_k"
        assert request.url.params["live"] == "true"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    http = httpx.Client(base_url="http://sec", transport=httpx.MockTransport(handler))
    with SecClient("http://sec", "sec_k", http=http) as sec:
        items = list(sec.stream("job_x"))
    assert [type(i) for i in items] == [JobEvent, StreamEnd]
