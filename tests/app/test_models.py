"""Model listing and uploads: safetensors-only HF archives; hostile archives are refused
with a message naming the problem, and nothing is left on disk or in the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Model
from app.settings import Settings
from tests.app.conftest import TenantKey, count_rows, uploaded_files
from tests.app.model_archives import (
    CONFIG,
    model_files,
    safetensors_bytes,
    tar_gz_bytes,
    zip_bytes,
)

pytestmark = pytest.mark.unit


def upload(client: TestClient, tenant: TenantKey, data: bytes, filename: str = "m.zip") -> object:
    return client.post(
        "/v1/models",
        headers=tenant.headers,
        files={"file": (filename, data, "application/octet-stream")},
        data={"name": "tiny"},
    )


def test_builtins_are_listed_with_availability(client: TestClient, tenant_a: TenantKey) -> None:
    r = client.get("/v1/models", headers=tenant_a.headers)
    assert r.status_code == 200
    builtin = next(m for m in r.json()["data"] if m["id"] == "minilm-l6")
    assert builtin["kind"] == "builtin"
    assert isinstance(builtin["available"], bool)
    assert builtin["num_parameters"] > 20_000_000
    assert client.get("/v1/models/minilm-l6", headers=tenant_a.headers).status_code == 200


@pytest.mark.parametrize("kind", ["zip", "tar.gz-with-folder"])
def test_good_archive_is_extracted_and_described(
    client: TestClient, tenant_a: TenantKey, settings: Settings, kind: str
) -> None:
    files = model_files()
    data = zip_bytes(files) if kind == "zip" else tar_gz_bytes(files, prefix="my-model/")
    r = upload(client, tenant_a, data, "m.zip" if kind == "zip" else "m.tar.gz")
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["id"].startswith("mdl_")
    assert body["architecture"] == "BertForSequenceClassification"
    assert body["num_parameters"] == 4 * 8 + 8
    assert body["details"]["num_labels"] == 2
    assert sorted(body["details"]["files"]) == sorted(
        f"my-model/{name}" if kind != "zip" else name for name in files
    )
    # The archive as uploaded is the one blob left (no temp files, no extracted copy).
    stored = uploaded_files(settings)
    assert [p.relative_to(settings.var_dir / "store").as_posix() for p in stored] == [
        f"models/{tenant_a.id}/{body['id']}.archive"
    ]
    assert stored[0].read_bytes() == data
    listed = client.get("/v1/models", headers=tenant_a.headers).json()["data"]
    assert body["id"] in [m["id"] for m in listed]


BAD_ARCHIVES = {
    "pickle-bin": (
        zip_bytes(model_files(**{"pytorch_model.bin": b"\x80\x04K\x01."})),
        422,
        "safetensors only",
    ),
    "pickle-pt": (
        zip_bytes(model_files(**{"weights.pt": b"\x80\x04K\x01."})),
        422,
        "safetensors only",
    ),
    "auto-map": (
        zip_bytes(
            model_files(
                **{"config.json": json.dumps({**CONFIG, "auto_map": {"AutoModel": "x.Y"}}).encode()}
            )
        ),
        422,
        "remote code",
    ),
    "python-file": (
        zip_bytes(model_files(**{"modeling_evil.py": b"import os"})),
        422,
        "must not contain code",
    ),
    "zip-slip": (zip_bytes(model_files(**{"../evil.txt": b"x"})), 422, "path traversal"),
    "absolute-path": (zip_bytes(model_files(**{"/tmp/evil.txt": b"x"})), 422, "absolute paths"),
    "zip-symlink": (
        zip_bytes(model_files(), symlinks={"link": "/etc/passwd"}),
        422,
        "symbolic links",
    ),
    "tar-symlink": (
        tar_gz_bytes(model_files(), symlinks={"link": "/etc/passwd"}),
        422,
        "links are not allowed",
    ),
    "tar-hardlink": (
        tar_gz_bytes(model_files(), hardlinks={"hard": "/etc/passwd"}),
        422,
        "links are not allowed",
    ),
    "zip-bomb": (
        zip_bytes(model_files(**{"pad.txt": b"\0" * 1_500_000})),
        413,
        "compression ratio",
    ),
    "too-many-entries": (
        zip_bytes(model_files(**{f"f{i}.txt": b"x" for i in range(60)})),
        413,
        "entries",
    ),
    "no-config": (zip_bytes(model_files(**{"config.json": None})), 422, "no config.json"),
    "no-weights": (zip_bytes(model_files(**{"model.safetensors": None})), 422, "safetensors"),
    "no-tokenizer": (zip_bytes(model_files(**{"vocab.txt": None})), 422, "tokenizer"),
    "bad-safetensors": (
        zip_bytes(model_files(**{"model.safetensors": safetensors_bytes({"w": [4]})[:-8]})),
        422,
        "outside the file",
    ),
    "not-an-archive": (b"just some bytes", 422, "not a .zip or .tar.gz"),
    "oversized": (b"PK" + b"\0" * (2 * 1024 * 1024 + 10), 413, "limit"),
}


@pytest.mark.parametrize(
    ("data", "status", "words"), BAD_ARCHIVES.values(), ids=BAD_ARCHIVES.keys()
)
def test_bad_archives_are_refused_and_leave_nothing(
    client: TestClient,
    tenant_a: TenantKey,
    settings: Settings,
    db: sessionmaker[Session],
    tmp_path: Path,
    data: bytes,
    status: int,
    words: str,
) -> None:
    r = upload(client, tenant_a, data)
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert words in r.json()["error"]["message"]  # type: ignore[attr-defined]
    assert count_rows(db, Model) == 0
    assert uploaded_files(settings) == []
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists()


def test_other_tenants_model_is_404_and_unlisted(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey
) -> None:
    model_id = upload(client, tenant_a, zip_bytes(model_files())).json()["id"]  # type: ignore[attr-defined]
    assert client.get(f"/v1/models/{model_id}", headers=tenant_b.headers).status_code == 404
    listed = client.get("/v1/models", headers=tenant_b.headers).json()["data"]
    assert model_id not in [m["id"] for m in listed]
