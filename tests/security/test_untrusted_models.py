"""Point 4: a model file is hostile until proven otherwise.

- a pickle whose unpickling would create a marker file is refused, under every pickle name and
  disguise, through the upload API and by the engine's loader; the marker never appears;
- a config that asks for remote code (auto_map, trust_remote_code, an unknown model_type,
  Python files) is refused;
- `trust_remote_code` is never switched on anywhere in the repository.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from sec_engine.errors import ModelLoadError
from sec_engine.models.registry import check_config, load_model
from tests.app.conftest import TenantKey
from tests.app.model_archives import model_files, tar_gz_bytes, zip_bytes
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


class _Marker:
    """Unpickling this object creates the file at `path` (what an attacker's payload does)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _payload(marker: Path) -> bytes:
    data = pickle.dumps(_Marker(marker))
    # Sanity: the payload really does create the marker when unpickled (then undo it).
    pickle.loads(data).close()
    assert marker.exists()
    marker.unlink()
    return data


PICKLE_NAMES = [
    "pytorch_model.bin",
    "training_args.bin",
    "model.pt",
    "optimizer.pth",
    "weights.pkl",
    "weights.pickle",
    "last.ckpt",
    "model.joblib",
    "sub/dir/PYTORCH_MODEL.BIN",
    "model.safetensors",  # a pickle wearing a safetensors name
]


def _upload(client: TestClient, tenant: TenantKey, name: str, data: bytes) -> object:
    return client.post(
        "/v1/models",
        headers=tenant.headers,
        files={"file": (name, data, "application/octet-stream")},
    )


def test_pickle_checkpoints_are_refused_and_never_unpickled(
    client: TestClient, tenant_a: TenantKey, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    payload = _payload(marker)
    tried = refused = 0
    for name in PICKLE_NAMES:
        files = model_files(**{name: payload})
        if name != "model.safetensors":
            files.pop("model.safetensors")  # only the pickle: nothing safe to fall back on
        for archive_name, archive in (("m.zip", zip_bytes(files)), ("m.tgz", tar_gz_bytes(files))):
            tried += 1
            r = _upload(client, tenant_a, archive_name, archive)
            status = r.status_code  # type: ignore[attr-defined]
            refused += 400 <= status < 500
            assert 400 <= status < 500, (name, archive_name, r.text)  # type: ignore[attr-defined]
    stored = list(settings.uploads_dir.rglob("*")) if settings.uploads_dir.exists() else []
    figure(
        "pickle_uploads",
        tried=tried,
        refused=refused,
        marker_created=marker.exists(),
        files_left=len([p for p in stored if p.is_file()]),
    )
    assert not marker.exists()
    assert not [p for p in stored if p.is_file()]


def test_engine_loader_never_unpickles(tmp_path: Path) -> None:
    """A folder that reached a worker some other way: the engine still refuses pickles."""
    marker = tmp_path / "PWNED"
    payload = _payload(marker)
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in model_files(**{"model.safetensors": None}).items():
        (folder / name).write_bytes(data)
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(folder), ["neg", "pos"])
    assert not marker.exists()


REMOTE_CODE = {
    "auto_map": {"config.json": json.dumps({"model_type": "bert", "auto_map": {"A": "x.Y"}})},
    "trust_remote_code_in_tokenizer_config": {
        "tokenizer_config.json": json.dumps({"trust_remote_code": True})
    },
    "python_file": {"modeling_evil.py": "import os\nos.system('touch /tmp/x')\n"},
    "compiled_module": {"evil.so": "\x7fELF"},
}


@pytest.mark.parametrize("files", REMOTE_CODE.values(), ids=REMOTE_CODE.keys())
def test_remote_code_is_refused(
    client: TestClient, tenant_a: TenantKey, files: dict[str, str]
) -> None:
    archive = zip_bytes(model_files(**{k: v.encode() for k, v in files.items()}))
    r = _upload(client, tenant_a, "m.zip", archive)
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    assert "code" in r.json()["error"]["message"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "config",
    [{"model_type": "bert", "auto_map": {"AutoModel": "m.M"}}, {"model_type": "evil-custom"}],
)
def test_engine_refuses_configs_that_need_remote_code(config: dict[str, object]) -> None:
    with pytest.raises(ModelLoadError):
        check_config(config)


def test_trust_remote_code_is_never_enabled() -> None:
    """Fails if any tracked or new file switches remote code on (this file builds the pattern
    from pieces, so it does not match itself)."""
    flag = "trust_remote_" + "code"
    pattern = re.compile(rf"""["']?{flag}["']?\s*[=:]\s*(True|true|1|["']?yes)""")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    me = Path(__file__).resolve()
    hits = []
    scanned = 0
    for rel in listed:
        path = REPO / rel
        if rel.startswith(".venv/") or path.resolve() == me or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        scanned += 1
        hits += [f"{rel}:{m.group(0)}" for m in pattern.finditer(text)]
    figure("trust_remote_code_scan", files_scanned=scanned, hits=len(hits))
    assert scanned > 100
    assert hits == []
