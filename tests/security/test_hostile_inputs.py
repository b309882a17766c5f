"""Every hostile input gets a 4xx, with a message that names the problem.

Cursors past the 64-bit range (query and `Last-Event-ID`), spec values past their bounds, a
GPU job on a deployment without GPU workers, huge ids echoed in errors, deeply nested JSON
bodies; plus the two exposures: API docs that need a CDN, and an open `/metrics`.
(The generators that find this class by themselves are in tests/security/test_fuzz.py.)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobStatus
from app.errors import ECHO_MAX_CHARS, NotFound, cut_echoed_values
from app.main import create_app
from app.pagination import CURSOR_MAX
from app.settings import Settings
from sec_engine.spec import AugmentationOperator, JobSpec
from tests.app.conftest import TenantKey, count_rows, set_status, submit_job
from tests.doubles import RecordingJobQueue

pytestmark = pytest.mark.unit

PAST_64_BITS = ["9223372036854775808", "1" * 30, "-9223372036854775809", "-" + "9" * 30]


# 1. Cursors ------------------------------------------------------------------------------


def _cursor_urls(job: str) -> list[tuple[str, str]]:
    """(url template with {v}, the parameter's name) for every integer cursor of the API."""
    return [
        (f"/v1/jobs/{job}/events?after={{v}}", "after"),
        (f"/v1/jobs/{job}/trace?after_step={{v}}", "after_step"),
        (f"/v1/jobs/{job}/events/stream?after={{v}}", "after"),
        (f"/v1/jobs/{job}/events/stream?live=true&trace_after={{v}}", "trace_after"),
    ]


@pytest.mark.parametrize("value", [*PAST_64_BITS, "-2", "abc", "1.5"])
def test_cursor_query_params_out_of_range_are_422_naming_the_param(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session], value: str
) -> None:
    set_status(db, job_a, JobStatus.CANCELLED)  # a stream that does start ends at once
    for template, param in _cursor_urls(job_a):
        r = client.get(template.format(v=value), headers=tenant_a.headers)
        assert r.status_code == 422, (template, value, r.text)
        assert param in r.json()["error"]["message"], (template, value, r.text)


@pytest.mark.parametrize("value", [*PAST_64_BITS, "-1", "-5", "abc", "1.5", "0x10", ""])
def test_last_event_id_out_of_range_or_not_a_number_is_422(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session], value: str
) -> None:
    set_status(db, job_a, JobStatus.CANCELLED)
    r = client.get(
        f"/v1/jobs/{job_a}/events/stream",
        headers={**tenant_a.headers, "Last-Event-ID": value},
    )
    assert r.status_code == 422, (value, r.text)
    assert "Last-Event-ID" in r.json()["error"]["message"], r.text


def test_cursors_at_the_64_bit_bound_are_served(
    client: TestClient, tenant_a: TenantKey, job_a: str, db: sessionmaker[Session]
) -> None:
    set_status(db, job_a, JobStatus.CANCELLED)
    top = str(CURSOR_MAX)
    for template, _ in _cursor_urls(job_a):
        r = client.get(template.format(v=top), headers=tenant_a.headers)
        assert r.status_code == 200, (template, r.text)
    r = client.get(
        f"/v1/jobs/{job_a}/events/stream", headers={**tenant_a.headers, "Last-Event-ID": top}
    )
    assert r.status_code == 200, r.text
    assert "event: end" in r.text
    # A browser's EventSource resumes with the id it saw last: still a plain integer.
    r = client.get(
        f"/v1/jobs/{job_a}/events/stream", headers={**tenant_a.headers, "Last-Event-ID": "1"}
    )
    assert r.status_code == 200, r.text


def test_every_cursor_has_the_one_bound(client: TestClient) -> None:
    """Every integer cursor the API takes (query or header) declares the same maximum."""
    spec: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    cursors = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                name = p["name"].lower()
                if name in ("after", "after_step", "trace_after", "last-event-id"):
                    schema = p["schema"]
                    for option in schema.get("anyOf", [schema]):
                        if option.get("type") == "integer":
                            cursors[(method, path, name)] = option.get("maximum")
    assert ("get", "/v1/jobs/{job_id}/events/stream", "last-event-id") in cursors
    assert len(cursors) == 5, cursors
    assert set(cursors.values()) == {CURSOR_MAX}, cursors


# 2. Spec limits --------------------------------------------------------------------------

OVER_LIMIT: list[tuple[str, dict[str, Any]]] = [
    ("training.eval_every_steps", {"training": {"eval_every_steps": 10**18}}),
    ("training.eval_every_steps", {"training": {"eval_every_steps": 1_000_001}}),
    ("split.max_train_rows", {"split": {"max_train_rows": 10**18}}),
    ("split.max_train_rows", {"split": {"max_train_rows": 10_000_001}}),
    ("techniques.sqd.student_layers", {"techniques": {"sqd": {"student_layers": 10**6}}}),
    ("techniques.sqd.student_layers", {"techniques": {"sqd": {"student_layers": 49}}}),
    (
        "techniques.ada.operators",
        {"techniques": {"ada": {"operators": ["random_swap"] * 10_000}}},
    ),
    (
        "techniques.ada.operators",
        {"techniques": {"ada": {"operators": ["random_swap", "random_swap"]}}},
    ),
]


@pytest.mark.parametrize(("field", "extra"), OVER_LIMIT, ids=[f for f, _ in OVER_LIMIT])
def test_spec_values_past_their_bounds_are_422_naming_the_field(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    db: sessionmaker[Session],
    field: str,
    extra: dict[str, Any],
) -> None:
    r = submit_job(client, tenant_a, dataset_a, **extra)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"], r.text
    assert count_rows(db, Job) == 0


def test_spec_values_at_their_bounds_are_accepted() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": "d",
            "training": {"eval_every_steps": 1_000_000},
            "split": {"max_train_rows": 10_000_000},
            "techniques": {
                "sqd": {"student_layers": 48},
                "ada": {"operators": [op.value for op in AugmentationOperator]},
            },
        }
    )
    assert len(spec.techniques.ada.operators) == len(AugmentationOperator)
    with pytest.raises(ValidationError, match="duplicate"):
        JobSpec.model_validate(
            {"dataset": "d", "techniques": {"ada": {"operators": ["random_swap"] * 2}}}
        )


# 3. A GPU job where no worker has a GPU --------------------------------------------------


def test_cuda_job_is_refused_without_gpu_workers(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    r = submit_job(client, tenant_a, dataset_a, device="cuda")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "no_gpu_workers"
    assert "device" in error["message"]
    assert "SEC_GPU_WORKERS" in error["message"]
    assert count_rows(db, Job) == 0
    for device in ("auto", "cpu"):
        assert submit_job(client, tenant_a, dataset_a, device=device).status_code == 201


def test_cuda_job_is_accepted_with_gpu_workers(
    settings: Settings, db: sessionmaker[Session], tenant_a: TenantKey
) -> None:
    from tests.app.conftest import upload_dataset

    with_gpu = settings.model_copy(update={"gpu_workers": True})
    with TestClient(create_app(with_gpu, job_queue=RecordingJobQueue())) as c:
        dataset = upload_dataset(c, tenant_a).json()["id"]
        r = submit_job(c, tenant_a, dataset, device="cuda")
    assert r.status_code == 201, r.text


# 4. Ids echoed in errors -----------------------------------------------------------------


def test_huge_ids_are_cut_in_error_messages(
    client: TestClient, tenant_a: TenantKey, dataset_a: str
) -> None:
    huge = "x" * 10_000
    h = tenant_a.headers
    answers = {
        "job": client.get(f"/v1/jobs/{huge}", headers=h),
        "job events": client.get(f"/v1/jobs/{huge}/events", headers=h),
        "job trace": client.get(f"/v1/jobs/{huge}/trace", headers=h),
        "dataset": client.get(f"/v1/datasets/{huge}", headers=h),
        "model": client.get(f"/v1/models/{huge}", headers=h),
        "artifact": client.get(f"/v1/artifacts/{huge}", headers=h),
        "deployment": client.get(f"/v1/deployments/{huge}", headers=h),
        "predict": client.post(
            f"/v1/deployments/{huge}/predict", headers=h, json={"inputs": ["a"]}
        ),
        "key": client.delete(f"/v1/keys/{huge}", headers=h),
        "spec dataset": submit_job(client, tenant_a, "ds_" + huge[:1000]),
        "spec model": submit_job(client, tenant_a, dataset_a, base_model="mdl_" + huge[:500]),
        "deployment body": client.post(
            "/v1/deployments", headers=h, json={"artifact_id": "art_" + huge}
        ),
    }
    for what, r in answers.items():
        assert r.status_code in (404, 422), (what, r.status_code, r.text[:200])
        message = r.json()["error"]["message"]
        assert "x" * (ECHO_MAX_CHARS + 1) not in message, (what, len(message))
        if r.status_code == 404:  # (a 422 may refuse the id for its length, unechoed)
            assert "…" in message, (what, message)
        assert len(r.text) < 1000, (what, len(r.text))


def test_huge_unknown_field_names_are_cut(client: TestClient, tenant_a: TenantKey) -> None:
    r = client.post("/v1/keys", headers=tenant_a.headers, json={"name": "k", "y" * 10_000: 1})
    assert r.status_code == 422
    assert "y" * (ECHO_MAX_CHARS + 1) not in r.text
    assert "y" * ECHO_MAX_CHARS + "…" in r.json()["error"]["message"]


def test_echoed_values_are_cut_whatever_their_quotes() -> None:
    long = "z" * 200
    cut = "z" * ECHO_MAX_CHARS + "…"
    assert NotFound(f"job {long!r} not found").message == f"job {cut!r} not found"
    assert cut_echoed_values(f"the tenant's job {long!r}") == f"the tenant's job {cut!r}"
    quoted = long + "'"  # repr picks double quotes
    assert cut_echoed_values(f"model {quoted!r}") == f"model {cut!r}"
    assert cut_echoed_values("job 'job_1' not found") == "job 'job_1' not found"


# Deep JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [900, 10_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "object", "in_field"])
def test_deeply_nested_json_bodies_are_4xx(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, depth: int, shape: str
) -> None:
    if shape == "array":
        body = "[" * depth + "]" * depth
    elif shape == "object":
        body = '{"a":' * depth + "1" + "}" * depth
    else:
        body = f'{{"dataset": "{dataset_a}", "training": ' + "[" * depth + "]" * depth + "}"
    for path in ("/v1/jobs", "/v1/keys", "/v1/deployments", "/v1/deployments/dep_x/predict"):
        r = client.post(
            path, headers={**tenant_a.headers, "Content-Type": "application/json"}, content=body
        )
        assert 400 <= r.status_code < 500, (path, shape, depth, r.status_code, r.text[:200])
        assert r.json()["error"]["message"]


# 5. API docs without a network -----------------------------------------------------------


def test_docs_load_their_assets_from_the_api_itself(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200, page
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
        urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", r.text)
        assert urls, page
        for url in urls:
            parts = urlsplit(url)
            assert not parts.scheme, f"{page} loads {url} from elsewhere"
            assert not parts.netloc, f"{page} loads {url} from elsewhere"
            asset = client.get(url)
            assert asset.status_code == 200, (page, url)
            assert asset.content, (page, url)
    assert client.get("/docs/oauth2-redirect").status_code == 200


# 6. /metrics behind a token --------------------------------------------------------------


def test_metrics_are_open_without_a_token(client: TestClient, tmp_path: Any) -> None:
    assert client.get("/metrics").status_code == 200
    # SEC_METRICS_TOKEN= (empty) is no token, not a token nobody can present.
    assert Settings(var_dir=tmp_path, metrics_token="").metrics_token is None


def test_metrics_need_the_token_when_one_is_set(
    settings: Settings, db: sessionmaker[Session]
) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("scrape-secret-123")})
    with TestClient(create_app(guarded, job_queue=RecordingJobQueue())) as c:
        assert c.get("/metrics").status_code == 401
        for wrong in ("Bearer nope", "Bearer scrape-secret-1234", "scrape-secret-123", "Basic x"):
            r = c.get("/metrics", headers={"Authorization": wrong})
            assert r.status_code == 401, wrong
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "unauthorized"
        ok = c.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
        assert ok.status_code == 200
        assert "sec_jobs" in ok.text
