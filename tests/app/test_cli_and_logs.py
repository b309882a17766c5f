"""The `sec` CLI (migrate, create-key) and the promise that logs carry no keys or dataset text."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.settings import get_settings
from tests.app.conftest import TenantKey, upload_dataset

pytestmark = pytest.mark.unit


def test_migrate_then_create_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["migrate"]).exit_code == 0
        first = runner.invoke(cli, ["create-key", "--tenant", "acme"])
        assert first.exit_code == 0, first.output
        key = first.stdout.strip().splitlines()[-1]
        assert key.startswith("sec_")
        assert len(key) == 47
        second = runner.invoke(cli, ["create-key", "--tenant", "acme", "--name", "ci"])
        assert second.exit_code == 0
        assert second.stdout.strip().splitlines()[-1] != key

        from app.main import create_app
        from tests.doubles import RecordingJobQueue

        with TestClient(create_app(get_settings(), job_queue=RecordingJobQueue())) as c:
            me = c.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
            assert me.status_code == 200
            assert me.json()["name"] == "acme"
            keys = c.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).json()
            assert len(keys) == 2
    finally:
        get_settings.cache_clear()


def test_logs_hold_no_key_and_no_dataset_text(
    client: TestClient, tenant_a: TenantKey, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_text = b"text,label\nzanzibar-unique-phrase,pos\nquokka-unique-phrase,neg\n"
    assert upload_dataset(client, tenant_a, secret_text).status_code == 201
    bad = b"text,label\nzanzibar-unique-phrase,pos,extra\n"
    assert upload_dataset(client, tenant_a, bad).status_code == 422
    client.get("/v1/me", headers={"Authorization": f"Bearer {tenant_a.key[:-1]}x"})
    out = capsys.readouterr()
    logs = out.out + out.err
    assert "request" in logs
    assert "/v1/datasets" in logs
    assert tenant_a.key not in logs
    assert tenant_a.key[:-1] not in logs
    assert "zanzibar" not in logs
    assert "quokka" not in logs


def test_key_shaped_strings_are_masked() -> None:
    from app.logging import _mask_keys

    event = {"event": "oops", "detail": "token sec_abcdefghijklmnop was bad"}
    assert "sec_abcdefghijklmnop" not in str(_mask_keys(None, "info", event))
