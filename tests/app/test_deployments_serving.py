"""Hosted inference over HTTP with a real tiny artifact: warm-up, predict (texts and pairs),
micro-batching, integrity failure, overload (429), input limits (413/422), tenant isolation,
unload on delete, LRU eviction and lazy reload."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.conftest import TenantKey, submit_job
from tests.app.deploy_util import deploy, predict, serving, wait_settled
from tests.serving.tiny_artifact import LABELS, TinyArtifact, register_artifact, tiny_artifact

pytestmark = pytest.mark.unit

MAX_INPUTS = 8
MAX_CHARS = 200
QUEUE = 4


@pytest.fixture(scope="module")
def tiny() -> TinyArtifact:
    return tiny_artifact()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "inference_max_inputs": MAX_INPUTS,
            "inference_max_text_chars": MAX_CHARS,
            "inference_queue_size": QUEUE,
            "inference_threads": 1,
            "inference_cache_models": 1,
            # the batch size a deployment picks from its timed curve depends on the machine's
            # load; these tests count batches, so they keep the configured size
            "inference_auto_batch_size": False,
        }
    )


@pytest.fixture
def artifact_a(
    tiny: TinyArtifact,
    db: sessionmaker[Session],
    settings: Settings,
    tenant_a: TenantKey,
    job_a: str,
) -> str:
    return register_artifact(db, settings, tenant_a.id, job_a, tiny)


@pytest.fixture
def ready_a(client: TestClient, tenant_a: TenantKey, artifact_a: str) -> str:
    deployment_id = deploy(client, tenant_a, artifact_a, max_batch_size=16, max_wait_ms=20)
    settled = wait_settled(client, tenant_a, deployment_id)
    assert settled["status"] == "ready", settled
    assert settled["error_message"] is None
    return deployment_id


def test_deploy_predict_delete(client: TestClient, tenant_a: TenantKey, ready_a: str) -> None:
    assert serving(client).is_loaded(ready_a)
    inputs: list[Any] = [
        "good great film",
        {"text": "awful dull plot", "text_pair": "the movie"},
        "bad boring terrible story",
        "the movie was a film",
    ]
    r = predict(client, tenant_a, ready_a, inputs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deployment_id"] == ready_a
    preds = body["predictions"]
    assert [p["label"] for p in preds] == ["positive", "negative", "negative", "neutral"]
    for p in preds:
        assert list(p["probabilities"]) == LABELS
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-6
        assert p["probabilities"][p["label"]] == max(p["probabilities"].values())

    assert client.delete(f"/v1/deployments/{ready_a}", headers=tenant_a.headers).status_code == 204
    assert not serving(client).is_loaded(ready_a)
    assert predict(client, tenant_a, ready_a, ["good"]).status_code == 404


def test_one_request_is_cut_into_batches_with_the_same_answers(
    client: TestClient, tenant_a: TenantKey, ready_a: str
) -> None:
    texts = [f"good film {i % 3 * 'bad '}the plot" for i in range(MAX_INPUTS)]
    alone = [predict(client, tenant_a, ready_a, [t]).json()["predictions"][0] for t in texts]
    batcher = serving(client).cache.get(ready_a)
    assert batcher is not None
    before = batcher.batcher.batches_run
    together = predict(client, tenant_a, ready_a, texts).json()["predictions"]
    assert batcher.batcher.batches_run == before + 1  # 8 inputs <= max_batch_size 16
    assert [p["label"] for p in together] == [p["label"] for p in alone]
    for a, b in zip(alone, together, strict=True):
        for label in LABELS:
            # int8 activations are quantised with a per-batch scale (see test_encoder_model).
            assert abs(a["probabilities"][label] - b["probabilities"][label]) < 0.01


def test_corrupted_archive_fails_and_loads_nothing(
    client: TestClient,
    tenant_a: TenantKey,
    tiny: TinyArtifact,
    dataset_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    job = submit_job(client, tenant_a, dataset_a).json()["id"]
    damaged = tmp_path / "damaged.tar.gz"
    data = bytearray(tiny.archive.read_bytes())
    data[len(data) // 3] ^= 0x01
    damaged.write_bytes(bytes(data))
    artifact = register_artifact(db, settings, tenant_a.id, job, tiny, archive=damaged)
    deployment_id = deploy(client, tenant_a, artifact)
    settled = wait_settled(client, tenant_a, deployment_id)
    assert settled["status"] == "failed"
    assert "archive sha256 mismatch" in settled["error_message"]
    assert not serving(client).is_loaded(deployment_id)
    assert not (settings.serving_dir / "artifacts").exists()
    r = predict(client, tenant_a, deployment_id, ["good"])
    assert r.status_code == 409
    assert "sha256 mismatch" in r.json()["error"]["message"]


def test_overload_is_answered_429_not_queued(
    client: TestClient, tenant_a: TenantKey, artifact_a: str
) -> None:
    deployment_id = deploy(client, tenant_a, artifact_a, max_batch_size=1, max_wait_ms=0)
    assert wait_settled(client, tenant_a, deployment_id)["status"] == "ready"
    deployed = serving(client).cache.get(deployment_id)
    assert deployed is not None
    entered, release = threading.Event(), threading.Event()
    real_predict = deployed.model.predict

    def held_predict(values: Any) -> Any:  # a model that takes as long as the test wants
        entered.set()
        assert release.wait(30)
        return real_predict(values)

    deployed.model.predict = held_predict  # type: ignore[method-assign,assignment]
    results: dict[str, Any] = {}

    def call(name: str, inputs: list[str]) -> None:
        results[name] = predict(client, tenant_a, deployment_id, inputs)

    running = threading.Thread(target=call, args=("running", ["good"]))
    running.start()
    assert entered.wait(30)
    queued = threading.Thread(target=call, args=("queued", ["bad"] * QUEUE))
    queued.start()
    while deployed.batcher.depth < QUEUE:  # the queue is now exactly full
        threading.Event().wait(0.01)
    r = predict(client, tenant_a, deployment_id, ["good film"])
    release.set()
    running.join(30)
    queued.join(30)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "queue_full"
    assert int(r.headers["Retry-After"]) >= 1
    assert results["running"].status_code == 200
    assert results["queued"].status_code == 200
    assert len(results["queued"].json()["predictions"]) == QUEUE
    # Once drained, it serves again.
    assert predict(client, tenant_a, deployment_id, ["good"]).status_code == 200


@pytest.mark.parametrize(
    ("inputs", "status", "fragment"),
    [
        (
            ["good"] * (MAX_INPUTS + 1),
            413,
            f"{MAX_INPUTS + 1} inputs in one request; the limit is {MAX_INPUTS}",
        ),
        (
            ["good", "x" * (MAX_CHARS + 1)],
            422,
            f"inputs[1] has {MAX_CHARS + 1} characters; the limit is {MAX_CHARS}",
        ),
        (["   "], 422, "inputs[0] is empty"),
        ([{"text": "good", "text_pair": ""}], 422, "inputs[0].text_pair is empty"),
        (["good", 5], 422, "inputs[1] is a number"),
        ([None], 422, "inputs[0] is null"),
        ([["good", "bad"]], 422, "inputs[0] is an array"),
        ([{"text": "good"}], 422, "text_pair"),
        ([{"text": "good", "text_pair": "bad", "extra": 1}], 422, "unknown field"),
        ([{"text": 3, "text_pair": "bad"}], 422, "text"),
        ([], 422, "at least one input"),
        ("good", 422, "must be an array"),
    ],
)
def test_bad_inputs_get_clear_errors(
    client: TestClient,
    tenant_a: TenantKey,
    ready_a: str,
    inputs: Any,
    status: int,
    fragment: str,
) -> None:
    r = predict(client, tenant_a, ready_a, inputs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"], r.json()


def test_other_tenants_get_404(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey, ready_a: str
) -> None:
    assert predict(client, tenant_b, ready_a, ["good"]).status_code == 404
    assert client.get(f"/v1/deployments/{ready_a}", headers=tenant_b.headers).status_code == 404
    assert client.delete(f"/v1/deployments/{ready_a}", headers=tenant_b.headers).status_code == 404
    assert serving(client).is_loaded(ready_a)
    assert predict(client, tenant_a, ready_a, ["good"]).status_code == 200
    r = client.post(f"/v1/deployments/{ready_a}/predict", json={"inputs": ["good"]})
    assert r.status_code == 401


def test_eviction_and_lazy_reload(
    client: TestClient, tenant_a: TenantKey, artifact_a: str, ready_a: str
) -> None:
    """With room for one model, a second deployment evicts the first; the first reloads
    (verified again) on its next request."""
    second = deploy(client, tenant_a, artifact_a)
    assert wait_settled(client, tenant_a, second)["status"] == "ready"
    manager = serving(client)
    assert manager.cache.keys() == [second]
    r = predict(client, tenant_a, ready_a, ["good great film"])
    assert r.status_code == 200
    assert r.json()["predictions"][0]["label"] == "positive"
    assert manager.cache.keys() == [ready_a]


def test_a_pending_deployment_orphaned_by_a_restart_warms_up_on_request(
    client: TestClient,
    tenant_a: TenantKey,
    artifact_a: str,
    db: sessionmaker[Session],
) -> None:
    """A row left `pending` by a process that died mid-warm-up (inserted directly here, so
    no warm-up runs): the first predict answers 409 and starts a warm-up in this process."""
    from app.db.models import Deployment
    from app.db.session import unit_of_work

    with unit_of_work(db) as s:
        row = Deployment(
            tenant_id=tenant_a.id,
            artifact_id=artifact_a,
            status="pending",
            config={"max_batch_size": 4, "max_wait_ms": 1},
        )
        s.add(row)
        s.flush()
        deployment_id = row.id
    r = predict(client, tenant_a, deployment_id, ["good"])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "deployment_not_ready"
    assert wait_settled(client, tenant_a, deployment_id)["status"] == "ready"
    assert predict(client, tenant_a, deployment_id, ["good"]).status_code == 200
