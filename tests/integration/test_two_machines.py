"""Two machines on one box: the API and the workers share Postgres, Redis and the S3 server,
and no folder. Each process gets its own `var_dir`; the uploads, the teacher checkpoint and
the artifact can only travel through the store.

1. A job submitted to the API runs on a worker with its own folder; the artifact downloaded
   from the API matches its sha256.
2. A worker SIGKILLed after its teacher checkpoint (its folder then deleted, as if the machine
   were gone) is replaced by a second worker with a folder of its own, which restores the
   teacher from the store (`checkpoint.resumed`) instead of training it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db.models import utcnow
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.queue import CeleryJobQueue
from app.settings import Settings
from tests.conftest import S3Bucket, migrate
from tests.integration import flow
from tests.integration.flow import celery_worker, submit_job, wait_for_job
from workers.reaper import reap

pytestmark = pytest.mark.integration


def _machine(root: Path, postgres_url: str, redis_url: str, s3: S3Bucket, **over: Any) -> Settings:
    """The settings of one 'machine': shared services, its own folder."""
    return Settings(
        environment="test",
        var_dir=root,
        database_url=postgres_url,
        broker_url=redis_url,
        store_url=s3.store_url,
        s3_endpoint_url=s3.endpoint_url,
        **over,
    )


def _events(client: TestClient, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get(
        f"/v1/jobs/{job_id}/events?limit=1000", headers=headers
    ).json()["data"]
    return data


def _download_checked(client: TestClient, headers: dict[str, str], job_id: str) -> None:
    artifacts = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["data"]
    assert len(artifacts) == 1
    download = client.get(artifacts[0]["download_url"], headers=headers)
    assert download.status_code == 200, download.text
    digest = hashlib.sha256(download.content).hexdigest()
    assert digest == artifacts[0]["sha256"] == download.headers["X-Checksum-SHA256"]


def _client_dir(tmp_path: Path) -> Path:
    """The user's own folder, where the files they upload are made."""
    folder = tmp_path / "client"
    folder.mkdir(exist_ok=True)
    return folder


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_a_job_runs_on_a_worker_that_shares_no_folder_with_the_api(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_bucket: S3Bucket
) -> None:
    api = _machine(tmp_path / "api", postgres_url, redis_url, s3_bucket)
    worker = _machine(tmp_path / "worker", postgres_url, redis_url, s3_bucket)
    migrate(postgres_url)
    log = tmp_path / "worker.log"
    with TestClient(create_app(api)) as client, celery_worker(worker, log):
        headers, job_id = submit_job(client, api, _client_dir(tmp_path))
        job = wait_for_job(client, headers, job_id, log)
        assert job["status"] == "succeeded", job
        _download_checked(client, headers, job_id)

    keys = s3_bucket.object_keys()
    prefix = s3_bucket.prefix + "/"
    assert any(k.startswith(prefix + "datasets/") for k in keys), keys
    assert any(k.startswith(prefix + "models/") for k in keys), keys
    assert any(k.endswith(".tar.gz") and f"/{job_id}/" in k for k in keys), keys
    # Nothing of the job's inputs or outputs sits in the API's folder: it went to S3.
    api_files = _files_under(api.var_dir) if api.var_dir.exists() else set()
    assert not [f for f in api_files if f.endswith((".csv", ".archive", ".tar.gz"))], api_files


def test_a_retry_on_another_machine_resumes_from_the_checkpoint_in_the_store(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in test_worker_crash: more student epochs leave a few seconds between the checkpoint
    # and the end of the job, for the kill to land in.
    training = {**flow.FAST_SPEC["training"], "student_epochs": 40}
    monkeypatch.setitem(flow.FAST_SPEC, "training", training)
    lease = {"job_lease_seconds": 5, "job_heartbeat_seconds": 1}
    api = _machine(tmp_path / "api", postgres_url, redis_url, s3_bucket, **lease)
    first = _machine(tmp_path / "worker1", postgres_url, redis_url, s3_bucket, **lease)
    second = _machine(tmp_path / "worker2", postgres_url, redis_url, s3_bucket, **lease)
    migrate(postgres_url)
    with TestClient(create_app(api)) as client:
        with celery_worker(first, tmp_path / "worker1.log") as proc:
            headers, job_id = submit_job(client, api, _client_dir(tmp_path))
            deadline = time.monotonic() + 120
            while not any(
                e["kind"] == "checkpoint.saved" for e in _events(client, headers, job_id)
            ):
                assert time.monotonic() < deadline, "the first worker never saved a checkpoint"
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # The first machine is gone, its disk with it.
        shutil.rmtree(first.var_dir)
        assert any(
            k.startswith(f"{s3_bucket.prefix}/checkpoints/") for k in s3_bucket.object_keys()
        )

        time.sleep(api.job_lease_seconds + 1)
        engine = make_engine(postgres_url)
        queue = CeleryJobQueue(redis_url)
        try:
            assert reap(make_sessionmaker(engine), queue, utcnow()).requeued == [job_id]
        finally:
            queue.close()
            engine.dispose()

        with celery_worker(second, tmp_path / "worker2.log"):
            job = wait_for_job(client, headers, job_id, tmp_path / "worker2.log")
        events = _events(client, headers, job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        _download_checked(client, headers, job_id)

    kinds = {(e["attempt"], e["kind"]) for e in events}
    assert (1, "checkpoint.saved") in kinds
    assert (2, "checkpoint.resumed") in kinds, sorted(kinds)
    assert (2, "tal.round") not in kinds  # the second machine did not train the teacher
    assert not first.var_dir.exists()
    # The job ended for good: its checkpoint blob is gone from the store.
    assert not any(
        k.startswith(f"{s3_bucket.prefix}/checkpoints/") for k in s3_bucket.object_keys()
    )


# An address where no S3 server listens: the store "down" for whoever is configured with it.
DOWN = "http://127.0.0.1:9"


def _status(client: TestClient, headers: dict[str, str], job_id: str) -> tuple[str, int]:
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    return job["status"], job["attempts"]


def _reap(postgres_url: str, redis_url: str) -> list[str]:
    """One reaper sweep (beat runs it every minute in a deployment); the jobs it sent again."""
    engine = make_engine(postgres_url)
    queue = CeleryJobQueue(redis_url)
    try:
        return reap(make_sessionmaker(engine), queue, utcnow()).reenqueued
    finally:
        queue.close()
        engine.dispose()


def test_a_worker_that_cannot_reach_the_store_queues_the_job_again_not_fails_it(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_bucket: S3Bucket
) -> None:
    """The S3 server down for the first worker: the job goes back to the queue (the reaper's
    next sweep sends it), and a worker that reaches the store runs it to the end."""
    api = _machine(tmp_path / "api", postgres_url, redis_url, s3_bucket)
    cut_off = _machine(tmp_path / "worker1", postgres_url, redis_url, s3_bucket)
    cut_off = cut_off.model_copy(update={"s3_endpoint_url": DOWN})
    healthy = _machine(tmp_path / "worker2", postgres_url, redis_url, s3_bucket)
    migrate(postgres_url)
    with TestClient(create_app(api)) as client:
        with celery_worker(cut_off, tmp_path / "worker1.log"):
            headers, job_id = submit_job(client, api, _client_dir(tmp_path))
            deadline = time.monotonic() + 120
            while _status(client, headers, job_id) != ("queued", 1):
                assert time.monotonic() < deadline, "the job never went back to the queue"
                time.sleep(0.2)
        requeued = [e for e in _events(client, headers, job_id) if e["kind"] == "job.requeued"]
        assert [(e["attempt"], e["data"]["code"]) for e in requeued] == [(1, "store_unavailable")]
        assert _reap(postgres_url, redis_url) == [job_id]
        with celery_worker(healthy, tmp_path / "worker2.log"):
            job = wait_for_job(client, headers, job_id, tmp_path / "worker2.log")
        assert (job["status"], job["attempts"]) == ("succeeded", 2), job
        _download_checked(client, headers, job_id)


def test_an_input_changed_in_the_store_is_refused_by_the_worker(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_bucket: S3Bucket
) -> None:
    api = _machine(tmp_path / "api", postgres_url, redis_url, s3_bucket)
    worker = _machine(tmp_path / "worker", postgres_url, redis_url, s3_bucket)
    migrate(postgres_url)
    with TestClient(create_app(api)) as client:
        headers, job_id = submit_job(client, api, _client_dir(tmp_path))
        dataset = next(k for k in s3_bucket.object_keys() if "/datasets/" in k)
        body = s3_bucket.client.get_object(Bucket=s3_bucket.bucket, Key=dataset)["Body"].read()
        s3_bucket.client.put_object(
            Bucket=s3_bucket.bucket, Key=dataset, Body=body.replace(b"pos", b"neg", 1)
        )
        with celery_worker(worker, tmp_path / "worker.log"):
            job = wait_for_job(client, headers, job_id, tmp_path / "worker.log")
    assert (job["status"], job["error"]["code"]) == ("failed", "input_corrupt"), job


def test_the_api_answers_503_when_the_store_is_down_and_records_nothing(
    tmp_path: Path, postgres_url: str, redis_url: str, s3_bucket: S3Bucket
) -> None:
    api = _machine(tmp_path / "api", postgres_url, redis_url, s3_bucket)
    migrate(postgres_url)
    with TestClient(create_app(api.model_copy(update={"s3_endpoint_url": DOWN}))) as client:
        headers = {"Authorization": f"Bearer {flow.create_key(api, 'tenant-down')}"}
        r = client.post(
            "/v1/datasets",
            headers=headers,
            files={"file": ("d.csv", b"text,label\ngood,pos\nbad,neg\n", "text/csv")},
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert r.headers["Retry-After"] == "30"
        assert client.get("/v1/datasets", headers=headers).json()["data"] == []
