"""The end-to-end job flow, shared by the SQLite and the Postgres + Redis integration tests.

The API runs in-process (`TestClient` over `create_app`, with the real Celery producer); the
worker is a real `celery worker` subprocess on the real broker, so routing, JSON
serialization, the claim and the artifact path are all exercised as in production.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.main import create_app
from app.settings import Settings
from app.tenants import service as tenants
from tests.sec_engine.conftest import make_tiny_bert, write_sentiment_csv

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_SECONDS = 180.0

# Small enough for seconds on 2 CPU cores with a tiny model, but every stage runs.
FAST_SPEC: dict[str, Any] = {
    "budget": {"max_minutes": 3},
    "training": {
        "batch_size": 16,
        "max_seq_len": 32,
        "teacher_epochs": 2,
        "student_epochs": 1,
        "eval_every_steps": 10,
        "learning_rate": 1e-3,
    },
    "targets": {"latency_batch_size": 4, "latency_seq_len": 32},
    "seed": 0,
}


def worker_env(settings: Settings) -> dict[str, str]:
    from app.launcher import settings_env

    env = settings_env(settings)
    env["PYTHONPATH"] = str(REPO_ROOT)
    # The test machine's cores are shared: keep the worker's torch to one thread.
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


@contextmanager
def celery_worker(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process on the settings' broker; stopped (warm, then killed) afterwards.

    `extra_env` adds variables (the reliability tests name a fake engine with it)."""
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", "gpu,cpu", "--pool", "prefork", "--concurrency", "1", "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**worker_env(settings), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test can kill it with its child
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def create_key(settings: Settings, tenant: str) -> str:
    """What `sec create-key` does (an operator step, not part of the HTTP API)."""
    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            row = tenants.get_or_create_tenant(session, tenant)
            _, plaintext = tenants.create_api_key(session, row.id)
    finally:
        engine.dispose()
    return plaintext


def tiny_model_archive(workdir: Path) -> bytes:
    """A random-init tiny BERT + tokenizer, saved with safetensors, as a .tar.gz upload."""
    model_dir = make_tiny_bert(workdir / "tiny-bert")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=f"tiny-bert/{path.name}")
    return buf.getvalue()


def _tail(path: Path, n: int = 60) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def wait_for_job(
    client: TestClient, headers: dict[str, str], job_id: str, worker_log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(
        f"job still {job.get('status')} after {JOB_TIMEOUT_SECONDS} s\n{_tail(worker_log)}"
    )


def submit_job(client: TestClient, settings: Settings, workdir: Path) -> tuple[dict[str, str], str]:
    """Create a key, upload the tiny model and a dataset over HTTP, submit a job.

    Returns the auth headers and the job id."""
    key = create_key(settings, f"tenant-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {key}"}
    data = write_sentiment_csv(workdir / "train.csv", 160, unlabelled=20).read_bytes()
    r = client.post(
        "/v1/models",
        headers=headers,
        files={"file": ("tiny-bert.tar.gz", tiny_model_archive(workdir), "application/gzip")},
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    r = client.post(
        "/v1/datasets", headers=headers, files={"file": ("train.csv", data, "text/csv")}
    )
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]

    spec = {**FAST_SPEC, "base_model": model_id, "dataset": dataset_id}
    r = client.post("/v1/jobs", headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, json=spec)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    return headers, str(r.json()["id"])


def run_full_flow(settings: Settings, workdir: Path) -> None:
    """Key -> upload model and dataset -> job -> real worker -> events, trace, artifact."""
    worker_log = workdir / "worker.log"
    with TestClient(create_app(settings)) as client, celery_worker(settings, worker_log):
        headers, job_id = submit_job(client, settings, workdir)
        job = wait_for_job(client, headers, job_id, worker_log)
        assert job["status"] == "succeeded", f"{job}\n{_tail(worker_log)}"
        assert job["attempts"] == 1
        assert job["progress"] == 1.0
        assert job["metrics"], job

        events = client.get(f"/v1/jobs/{job_id}/events", headers=headers).json()["data"]
        kinds = [e["kind"] for e in events]
        assert "job.started" in kinds
        assert kinds[-1] == "job.succeeded", kinds
        assert kinds.index("job.started") < kinds.index("artifact.ready")

        trace = client.get(f"/v1/jobs/{job_id}/trace", headers=headers).json()["data"]
        assert trace, "the engine reported no controller trace"
        assert all(row["lambda1"] >= 0.0 and row["lambda2"] >= 0.0 for row in trace)

        artifacts = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["data"]
        assert len(artifacts) == 1
        artifact = artifacts[0]
        assert artifact["status"] == "ready"
        download = client.get(artifact["download_url"], headers=headers)
        assert download.status_code == 200, download.text
        digest = hashlib.sha256(download.content).hexdigest()
        assert digest == artifact["sha256"] == download.headers["X-Checksum-SHA256"]

        with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
            names = tar.getnames()
            assert f"{job_id}/manifest.json" in names, names
            manifest_file = tar.extractfile(f"{job_id}/manifest.json")
            assert manifest_file is not None
            manifest = json.load(manifest_file)
        # Every file the record lists is in the archive with the recorded checksum.
        for entry in artifact["files"]:
            member = tar_bytes(download.content, f"{job_id}/{entry['path']}")
            assert hashlib.sha256(member).hexdigest() == entry["sha256"], entry["path"]
        assert "spec" in manifest, sorted(manifest)
        assert job["metrics"]["plan"]["teacher_steps"] == manifest["plan"]["teacher_steps"]
        assert job["metrics"]["warnings"] == manifest["warnings"]
        check_dry_run(client, headers, job["spec"], worker_log)
    # The worker must not have crashed along the way.
    assert "Traceback" not in _tail(worker_log, 400), _tail(worker_log)


def check_dry_run(
    client: TestClient, headers: dict[str, str], spec: dict[str, Any], worker_log: Path
) -> None:
    """The same spec as a dry run, on the same worker: the real calibration and plan, the
    `plan` event, no artifact."""
    r = client.post(
        "/v1/jobs",
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        json={**spec, "dry_run": True},
    )
    assert r.status_code == 201, r.text
    job = wait_for_job(client, headers, r.json()["id"], worker_log)
    assert job["status"] == "succeeded", f"{job}\n{_tail(worker_log)}"
    assert job["artifact_id"] is None
    plan = job["metrics"]["plan"]
    assert plan["teacher_steps"] > 0
    assert plan["predicted_minutes"] > 0
    assert plan["throughput"]["how"] != "scripted"  # calibrated on the worker
    kinds = [
        e["kind"]
        for e in client.get(f"/v1/jobs/{job['id']}/events", headers=headers).json()["data"]
    ]
    assert "plan" in kinds
    assert kinds[-1] == "job.succeeded", kinds
    artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=headers).json()["data"]
    assert artifacts == []


def tar_bytes(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()
