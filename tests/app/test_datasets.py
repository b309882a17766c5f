"""Dataset uploads: a summary for good files; for bad ones a 4xx naming the problem, and
nothing stored (no row, no file)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Dataset
from app.settings import Settings
from tests.app.conftest import TenantKey, count_rows, upload_dataset, uploaded_files

pytestmark = pytest.mark.unit


def test_csv_upload_is_summarised_and_stored(
    client: TestClient, tenant_a: TenantKey, settings: Settings
) -> None:
    data = b"text,label\ngreat film,pos\nawful plot,neg\nlovely acting,pos\nno label here,\n"
    r = upload_dataset(client, tenant_a, data, name="reviews")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "reviews"
    assert body["format"] == "csv"
    assert body["rows"] == 4
    assert body["labelled_rows"] == 3
    assert body["summary"]["labels"] == ["neg", "pos"]
    assert body["summary"]["class_balance"] == {"neg": 1, "pos": 2}
    assert body["summary"]["unlabelled_rows"] == 1
    assert any("fewer than 2" in p for p in body["summary"]["problems"])
    files = uploaded_files(settings)
    assert [f.name for f in files] == [f"{body['id']}.csv"]
    assert files[0].read_bytes() == data
    assert files[0].parent.name == tenant_a.id

    got = client.get(f"/v1/datasets/{body['id']}", headers=tenant_a.headers)
    assert got.status_code == 200
    assert got.json() == body


def test_jsonl_pairs_by_content_when_the_extension_is_unknown(
    client: TestClient, tenant_a: TenantKey
) -> None:
    lines = [
        {"text": "A man sleeps", "text_pair": "A person rests", "label": "entail"},
        {"text": "It rains", "text_pair": "It is sunny", "label": "contra"},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    r = upload_dataset(client, tenant_a, data, filename="pairs.txt")
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "jsonl"
    assert r.json()["has_pairs"] is True


def test_unlabelled_pool_needs_no_labels(client: TestClient, tenant_a: TenantKey) -> None:
    data = b"text\nsome text\nmore text\n"
    assert upload_dataset(client, tenant_a, data).status_code == 422
    r = upload_dataset(client, tenant_a, data, purpose="unlabelled")
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["purpose"] == "unlabelled"


@pytest.mark.parametrize(
    ("content", "filename", "status", "words"),
    [
        (b'text,label\n"unclosed quote,pos\n', "d.csv", 422, "malformed CSV"),
        (b"text,label\na,b,c\n", "d.csv", 422, "more values than header"),
        (b"review,label\ngood,pos\nbad,neg\n", "d.csv", 422, "missing required column 'text'"),
        (b"text,label\ncaf\xe9,pos\nbad,neg\n", "d.csv", 422, "not valid UTF-8"),
        (b"", "d.csv", 422, "empty"),
        (b"   \n\n", "d.csv", 422, "empty"),
        (b"text,label\ngood,pos\nfine,pos\n", "d.csv", 422, "only one class"),
        (b"text\ngood\nbad\n", "d.csv", 422, "no row has a label"),
        (b'{"text": "a", "label": "x"}\nnot json\n', "d.jsonl", 422, "not valid JSON"),
        (b"text,label\n" + b"t,a\nu,b\n" * 30, "d.csv", 413, "too many rows"),
        (b"text,label\n" + b"x" * (70 * 1024) + b",a\n", "d.csv", 413, "limit"),
    ],
    ids=[
        "malformed-csv",
        "extra-values",
        "missing-text-column",
        "non-utf8",
        "empty-file",
        "blank-file",
        "one-class",
        "no-labels",
        "bad-jsonl",
        "too-many-rows",
        "oversized",
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    client: TestClient,
    tenant_a: TenantKey,
    settings: Settings,
    db: sessionmaker[Session],
    content: bytes,
    filename: str,
    status: int,
    words: str,
) -> None:
    r = upload_dataset(client, tenant_a, content, filename=filename)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    assert count_rows(db, Dataset) == 0
    assert uploaded_files(settings) == []


def test_body_over_the_route_limit_is_413_in_the_error_shape(
    client: TestClient, tenant_a: TenantKey, settings: Settings, db: sessionmaker[Session]
) -> None:
    r = upload_dataset(client, tenant_a, b"x" * (settings.max_upload_bytes + 200 * 1024))
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert "limit" in r.json()["error"]["message"]
    assert count_rows(db, Dataset) == 0


def test_list_is_paginated_newest_first(client: TestClient, tenant_a: TenantKey) -> None:
    ids = [upload_dataset(client, tenant_a).json()["id"] for _ in range(3)]
    first = client.get("/v1/datasets?limit=2", headers=tenant_a.headers).json()
    assert [d["id"] for d in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = client.get(
        f"/v1/datasets?limit=2&cursor={first['next_cursor']}", headers=tenant_a.headers
    ).json()
    assert [d["id"] for d in second["data"]] == [ids[0]]
    assert second["has_more"] is False
    assert second["next_cursor"] is None


def test_garbage_cursor_is_422(client: TestClient, tenant_a: TenantKey) -> None:
    r = client.get("/v1/datasets?cursor=%%%", headers=tenant_a.headers)
    assert r.status_code == 422
    assert "cursor" in r.json()["error"]["message"]
