"""Artifact records and downloads (with the sha256 in headers); only ready ones download."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import TenantKey

pytestmark = pytest.mark.unit


def test_download_streams_the_archive_with_its_checksum(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    artifact_id, payload = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    digest = hashlib.sha256(payload).hexdigest()

    listed = client.get(f"/v1/jobs/{job_a}/artifacts", headers=tenant_a.headers).json()["data"]
    assert [a["id"] for a in listed] == [artifact_id]
    assert listed[0]["sha256"] == digest
    assert listed[0]["download_url"] == f"/v1/artifacts/{artifact_id}/download"
    job = client.get(f"/v1/jobs/{job_a}", headers=tenant_a.headers).json()
    assert job["artifact_id"] == artifact_id

    r = client.get(f"/v1/artifacts/{artifact_id}/download", headers=tenant_a.headers)
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["x-checksum-sha256"] == digest
    b64 = base64.b64encode(bytes.fromhex(digest)).decode()
    assert r.headers["content-digest"] == f"sha-256=:{b64}:"
    assert r.headers["digest"] == f"sha-256={b64}"
    assert f'filename="{artifact_id}.tar.gz"' in r.headers["content-disposition"]
    assert hashlib.sha256(r.content).hexdigest() == r.headers["x-checksum-sha256"]


def test_pending_artifact_does_not_download(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    artifact_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path, ready=False)
    record = client.get(f"/v1/artifacts/{artifact_id}", headers=tenant_a.headers).json()
    assert record["status"] == "pending"
    assert record["download_url"] is None
    r = client.get(f"/v1/artifacts/{artifact_id}/download", headers=tenant_a.headers)
    assert r.status_code == 409
    assert "not ready" in r.json()["error"]["message"]


def test_other_tenant_cannot_see_or_download(
    client: TestClient,
    tenant_a: TenantKey,
    tenant_b: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    artifact_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    for url in (
        f"/v1/artifacts/{artifact_id}",
        f"/v1/artifacts/{artifact_id}/download",
        f"/v1/jobs/{job_a}/artifacts",
    ):
        r = client.get(url, headers=tenant_b.headers)
        assert r.status_code == 404, url
        assert r.json()["error"]["code"] == "not_found"


def test_a_large_archive_downloads_whole_and_a_missing_file_is_500(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    # Several of the response's 1 MiB chunks, the last one partial.
    payload = bytes(range(256)) * (3 * 4096 + 7)
    artifact_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path, payload=payload)
    r = client.get(f"/v1/artifacts/{artifact_id}/download", headers=tenant_a.headers)
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["content-length"] == str(len(payload))

    stored = settings.var_dir / "store" / f"{tenant_a.id}/{job_a}/artifact.tar.gz"
    stored.unlink()
    r = client.get(f"/v1/artifacts/{artifact_id}/download", headers=tenant_a.headers)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "artifact_missing"
