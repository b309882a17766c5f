"""Bearer API keys: every failure is a 401 that says what is wrong; keys are stored hashed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.app.conftest import TenantKey

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("headers", "code", "words"),
    [
        ({}, "missing_api_key", "missing API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed_api_key", "Bearer"),
        ({"Authorization": "Bearer"}, "malformed_api_key", "Bearer"),
        ({"Authorization": "Bearer not-a-key"}, "malformed_api_key", "malformed API key"),
        ({"Authorization": "Bearer sec_" + "x" * 43}, "invalid_api_key", "invalid API key"),
    ],
)
def test_bad_credentials_get_401(
    client: TestClient, tenant_a: TenantKey, headers: dict[str, str], code: str, words: str
) -> None:
    r = client.get("/v1/datasets", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == code
    assert words in r.json()["error"]["message"]


def test_valid_key_identifies_the_tenant(client: TestClient, tenant_a: TenantKey) -> None:
    r = client.get("/v1/me", headers=tenant_a.headers)
    assert r.status_code == 200
    assert r.json()["id"] == tenant_a.id


def test_revoked_key_gets_401(client: TestClient, tenant_a: TenantKey) -> None:
    created = client.post("/v1/keys", headers=tenant_a.headers, json={"name": "ci"})
    assert created.status_code == 201
    second = created.json()
    second_headers = {"Authorization": f"Bearer {second['key']}"}
    assert client.get("/v1/me", headers=second_headers).status_code == 200

    revoked = client.delete(f"/v1/keys/{second['id']}", headers=tenant_a.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    r = client.get("/v1/me", headers=second_headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_api_key"
    assert "revoked" in r.json()["error"]["message"]
    # The other key of the tenant still works.
    assert client.get("/v1/me", headers=tenant_a.headers).status_code == 200


def test_key_listing_never_shows_secrets(client: TestClient, tenant_a: TenantKey) -> None:
    r = client.get("/v1/keys", headers=tenant_a.headers)
    assert r.status_code == 200
    assert [k["id"] for k in r.json()] == [tenant_a.key_id]
    assert tenant_a.key not in r.text
    assert "key" not in r.json()[0]


def test_other_tenants_key_cannot_be_revoked(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey
) -> None:
    r = client.delete(f"/v1/keys/{tenant_a.key_id}", headers=tenant_b.headers)
    assert r.status_code == 404
    assert client.get("/v1/me", headers=tenant_a.headers).status_code == 200


def test_plaintext_key_is_not_in_the_database(
    client: TestClient, tenant_a: TenantKey, db: sessionmaker[Session]
) -> None:
    with db() as s:
        tables = [
            r[0] for r in s.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        ]
        for table in tables:
            for row in s.execute(text(f'SELECT * FROM "{table}"')):
                assert all(tenant_a.key not in str(v) for v in row), table


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_key_use_is_stamped(client: TestClient, tenant_a: TenantKey) -> None:
    assert client.get("/v1/me", headers=tenant_a.headers).status_code == 200
    keys = client.get("/v1/keys", headers=tenant_a.headers).json()
    (mine,) = [k for k in keys if k["id"] == tenant_a.key_id]
    assert mine["last_used_at"] is not None
