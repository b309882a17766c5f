"""A downloaded artifact, unpacked, loads in a clean Python
with only transformers / onnxruntime (none of our packages importable) and reproduces the
endpoint's predictions on 100 inputs.

Tolerances, per class probability (labels must be identical on all 100 inputs):
- ONNX Runtime on the same int8 file, one input at a time, vs the endpoint's batches of 25:
  1e-4. Same graph and weights, and the engine's int8 export quantises activations with one
  scale per token, so an answer does not depend on its batch-mates or on padding; what is
  left is float summation order. (With ONNX Runtime's default of one scale per batch tensor
  the two differed by 0.002, and a served answer moved with other users' requests.)
- transformers fp32 safetensors vs the endpoint's int8 ONNX: 0.06. That difference is the
  quantisation itself (the engine's scheme: per-channel 7-bit weights, per-token int8
  activations) through 2 layers and the head; measured 0.008-0.035 on this model, whose
  answers have probability margins > 0.7, so no label can flip.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from sec_engine.artifact_contract import MANIFEST_NAME, describe_files, read_manifest
from tests.app.conftest import TenantKey
from tests.app.deploy_util import deploy, predict, wait_settled
from tests.serving.tiny_artifact import (
    TinyArtifact,
    register_artifact,
    sample_inputs,
    tiny_artifact,
)

pytestmark = pytest.mark.unit

ONNX_TOLERANCE = 1e-4
HF_TOLERANCE = 0.06

CLEAN_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    from pathlib import Path

    FORBIDDEN = {"app", "workers", "sec_engine", "tests", "bench"}

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in FORBIDDEN:
                raise ImportError(f"the artifact must load without our code, not {name!r}")
            return None

    sys.meta_path.insert(0, Forbid())

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir, onnx_path = Path(sys.argv[1]), Path(sys.argv[2])
    inputs = json.loads(Path(sys.argv[3]).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    hf, onnx = [], []
    for item in inputs:
        args = (item["text"], item["text_pair"]) if isinstance(item, dict) else (item,)
        enc = tokenizer(*args, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hf.append(softmax(model(**enc).logits.numpy()[0].astype("float64")).tolist())
        feeds = {n: enc[n].numpy().astype("int64") for n in names}
        onnx.append(softmax(session.run(["logits"], feeds)[0][0].astype("float64")).tolist())

    ours = sorted(m for m in sys.modules if m.partition(".")[0] in FORBIDDEN)
    print(json.dumps({"labels": labels, "hf": hf, "onnx": onnx, "ours": ours}))
    """
)


def test_downloaded_artifact_reproduces_the_endpoint_without_our_code(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    tiny: TinyArtifact = tiny_artifact()
    artifact_id = register_artifact(db, settings, tenant_a.id, job_a, tiny)
    deployment_id = deploy(client, tenant_a, artifact_id, max_batch_size=25, max_wait_ms=5)
    assert wait_settled(client, tenant_a, deployment_id)["status"] == "ready"

    inputs = sample_inputs(100, seed=7)
    endpoint: list[dict[str, Any]] = []
    for start in range(0, len(inputs), 25):
        r = predict(client, tenant_a, deployment_id, inputs[start : start + 25])
        assert r.status_code == 200, r.text
        endpoint += r.json()["predictions"]

    download = client.get(f"/v1/artifacts/{artifact_id}/download", headers=tenant_a.headers)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == download.headers["X-Checksum-SHA256"]
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        tar.extractall(unpacked, filter="data")
    (top,) = list(unpacked.iterdir())
    # Read as the artifact contract defines it: the download holds exactly the files its
    # manifest lists, with their checksums, and the manifest says where the model files are.
    manifest = read_manifest(top)
    on_disk = describe_files(top, exclude=frozenset({MANIFEST_NAME}))
    assert {f.path: f.sha256 for f in on_disk} == manifest.sha256
    model_dir, onnx_path = top / manifest.tokenizer_dir, top / manifest.serving_onnx

    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "check.py").write_text(CLEAN_SCRIPT)
    (clean / "inputs.json").write_text(json.dumps(inputs))
    # -I: isolated mode (no PYTHON* variables, no user site, not even the cwd on sys.path),
    # run from an empty folder: only what is installed in the environment is importable.
    proc = subprocess.run(
        [sys.executable, "-I", "check.py", str(model_dir), str(onnx_path), "inputs.json"],
        cwd=clean,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ours"] == []
    labels = result["labels"]
    assert labels == manifest.labels

    worst = {"hf": 0.0, "onnx": 0.0}
    for i, served in enumerate(endpoint):
        served_probs = [served["probabilities"][name] for name in labels]
        for runtime in ("hf", "onnx"):
            probs = result[runtime][i]
            assert labels[probs.index(max(probs))] == served["label"], (runtime, i, inputs[i])
            worst[runtime] = max(
                worst[runtime], *(abs(a - b) for a, b in zip(probs, served_probs, strict=True))
            )
    assert worst["onnx"] <= ONNX_TOLERANCE, worst
    assert worst["hf"] <= HF_TOLERANCE, worst
    print(f"max |p - p_endpoint|: {worst}")
