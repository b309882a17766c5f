"""`GET /metrics` (Prometheus) and the dashboard's static files."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import TenantKey
from tests.doubles import RecordingJobQueue

pytestmark = pytest.mark.unit


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in the exposition text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_jobs_and_label_requests_by_route(
    client: TestClient, tenant_a: TenantKey, job_a: str
) -> None:
    assert client.get(f"/v1/jobs/{job_a}", headers=tenant_a.headers).status_code == 200
    assert client.get("/v1/jobs/job_missing", headers=tenant_a.headers).status_code == 404
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert sample(text, "sec_jobs", status="queued") == 1
    assert sample(text, "sec_jobs", status="running") == 0
    route = "/v1/jobs/{job_id}"
    ok = sample(text, "sec_http_request_duration_seconds_count", route=route, status="200")
    missing = sample(text, "sec_http_request_duration_seconds_count", route=route, status="404")
    assert ok is not None
    assert ok >= 1
    assert missing is not None
    assert missing >= 1
    # Ids never become label values.
    assert job_a not in text
    assert "job_missing" not in text
    assert sample(text, "sec_broker_up") == 1
    assert sample(text, "sec_broker_queue_depth", queue="gpu") == 0


def test_metrics_survive_a_down_broker(settings: Settings, db: object) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down, job_queue=RecordingJobQueue())) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert sample(r.text, "sec_broker_up") == 0
    assert sample(r.text, "sec_jobs", status="queued") == 0


def test_dashboard_is_served_with_its_security_headers(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307)
    assert root.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200
    assert "<title>SEC" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    # Every script and stylesheet the page loads is served locally (no CDN).
    assets = re.findall(r'(?:src|href)="([^"#:]+\.(?:js|css))"', page.text)
    assert "vendor/uPlot.iife.min.js" in assets
    for asset in assets:
        assert client.get(f"/dashboard/{asset}").status_code == 200, asset
    assert "https://" not in page.text.split("<body>")[0]
