"""Point 9: API keys.

- keys are stored hashed: the raw database file and every text column are scanned for the
  plaintext (including the stored replay of an idempotent key creation);
- missing, malformed, unknown and revoked keys get 401 on every authenticated route;
- no key and no dataset text reach the logs, at DEBUG, through a flow that also fails.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import String, Text, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Base
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import TenantKey, upload_dataset
from tests.doubles import RecordingJobQueue
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

PUBLIC = {"/healthz", "/readyz", "/metrics"}


def _text_values(db: sessionmaker[Session]) -> Iterator[str]:
    with db() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                yield from (str(v) for v in row if v is not None)


def test_keys_are_stored_hashed(
    client: TestClient, tenant_a: TenantKey, db: sessionmaker[Session], settings: Settings
) -> None:
    created = client.post(
        "/v1/keys",
        headers={**tenant_a.headers, "Idempotency-Key": "new-key"},
        json={"name": "ci"},
    )
    assert created.status_code == 201, created.text
    secrets = [tenant_a.key, created.json()["key"]]
    assert all(secrets)
    raw = Path(settings.database_url.removeprefix("sqlite:///")).read_bytes()
    values = list(_text_values(db))
    hits = [k for k in secrets for v in values if k in v or k[4:] in v]
    raw_hits = [k for k in secrets if k.encode() in raw or k[4:].encode() in raw]
    figure(
        "key_storage_scan",
        keys=len(secrets),
        db_values_scanned=len(values),
        db_file_bytes_scanned=len(raw),
        plaintext_found=len(hits) + len(raw_hits),
    )
    assert not hits
    assert not raw_hits
    text_columns = [
        c.name
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if isinstance(c.type, String | Text) and "key" in c.name
    ]
    assert "key_hash" in text_columns


def test_bad_keys_are_401_on_every_route(
    client: TestClient, tenant_a: TenantKey, dataset_a: str
) -> None:
    revoked = client.post("/v1/keys", headers=tenant_a.headers, json={"name": "old"}).json()
    assert client.delete(f"/v1/keys/{revoked['id']}", headers=tenant_a.headers).status_code == 200
    flipped = tenant_a.key[:-1] + ("A" if tenant_a.key[-1] != "A" else "B")
    bad_headers: dict[str, dict[str, str]] = {
        "missing": {},
        "empty": {"Authorization": ""},
        "scheme_only": {"Authorization": "Bearer"},
        "basic_scheme": {"Authorization": f"Basic {tenant_a.key}"},
        "short": {"Authorization": "Bearer sec_short"},
        "no_prefix": {"Authorization": "Bearer " + "x" * 47},
        "unknown": {"Authorization": f"Bearer {flipped}"},
        "revoked": {"Authorization": f"Bearer {revoked['key']}"},
        "sql_injection": {"Authorization": "Bearer sec_' OR '1'='1' --" + "x" * 20},
    }
    ids = dict.fromkeys(("job_id", "dataset_id", "artifact_id", "deployment_id"), "x_" + "0" * 32)
    ids |= {"model_id": "mdl_" + "0" * 32, "key_id": "key_" + "0" * 32}
    tried = 0
    for path, methods in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if path in PUBLIC:
            continue
        url = path.format(**{p: ids[p] for p in re.findall(r"{(\w+)}", path)})
        for method in methods:
            for name, headers in bad_headers.items():
                r = client.request(method.upper(), url, headers=headers, json={})
                assert r.status_code == 401, (name, method, path, r.status_code, r.text)
                assert r.headers.get("www-authenticate") == "Bearer", (name, path)
                tried += 1
    figure(
        "bad_keys",
        routes_x_methods=tried // len(bad_headers),
        kinds=len(bad_headers),
        requests=tried,
        answered_401=tried,
    )


@pytest.fixture
def debug_client(settings: Settings, db: sessionmaker[Session]) -> Iterator[TestClient]:
    verbose = settings.model_copy(update={"log_level": "DEBUG"})
    with TestClient(create_app(verbose, job_queue=RecordingJobQueue())) as c:
        yield c


def test_no_key_or_dataset_text_in_logs(
    debug_client: TestClient,
    tenant_a: TenantKey,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = f"zebra-{uuid.uuid4().hex}"
    client = debug_client
    good = f"text,label\n{secret_text} one,pos\n{secret_text} two,neg\nok,pos\nfine,neg\n"
    ds = upload_dataset(client, tenant_a, good.encode())
    assert ds.status_code == 201, ds.text
    # Failures tend to echo their input: a bad row, a bad body, a bad key, an unknown field.
    bad_rows = f"text,label\n{secret_text},pos\n,\n".encode()
    assert upload_dataset(client, tenant_a, bad_rows).status_code in (413, 422)
    r = client.post(
        "/v1/jobs", headers=tenant_a.headers, json={"dataset": ds.json()["id"], secret_text: 1}
    )
    assert r.status_code == 422  # the answer names the field for its sender; the log must not
    created = client.post("/v1/keys", headers=tenant_a.headers, json={"name": "x"}).json()["key"]
    client.get("/v1/me", headers={"Authorization": f"Bearer {created}"})
    client.get("/v1/me", headers={"Authorization": f"Bearer {tenant_a.key[:-2]}zz"})
    client.get("/v1/me", headers={"Authorization": f"Bearer {secret_text}"})
    client.post(
        f"/v1/deployments/dep_{'0' * 32}/predict",
        headers=tenant_a.headers,
        json={"inputs": [secret_text]},
    )
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    secrets = {
        "api_key": tenant_a.key,
        "api_key_body": tenant_a.key[4:],
        "created_key": created,
        "dataset_text": secret_text,
    }
    found = {name: logs.count(value) for name, value in secrets.items()}
    figure(
        "log_scan",
        log_chars=len(logs),
        log_lines=logs.count("\n"),
        **{f"{k}_found": v for k, v in found.items()},
    )
    assert logs.count("request") >= 5  # the flow was logged, just without secrets
    assert found == dict.fromkeys(secrets, 0)
