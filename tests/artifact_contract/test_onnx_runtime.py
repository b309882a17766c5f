"""The latency the engine writes to the manifest (`time_onnx`) and the sessions
the endpoint serves with (`load_model`) take their ONNX Runtime options from one function."""

from __future__ import annotations

from typing import Any

import pytest

from sec_engine.artifact_contract import onnx_runtime, parse_manifest

pytestmark = pytest.mark.unit


def test_engine_latency_and_endpoint_sessions_share_session_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from app.serving.model import load_model
    from sec_engine.evaluation.latency import time_onnx
    from tests.serving.tiny_artifact import tiny_artifact

    tiny = tiny_artifact()
    onnx_path = tiny.directory / "model.int8.onnx"
    built: list[tuple[int, Any]] = []
    real = onnx_runtime.session_options

    def spy(threads: int) -> Any:
        options = real(threads)
        built.append((threads, options))
        return options

    monkeypatch.setattr(onnx_runtime, "session_options", spy)
    ids = torch.full((2, 8), 7, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["token_type_ids"] = torch.zeros_like(ids)
    time_onnx(onnx_path, inputs, threads=2, runtime="onnxruntime-int8", warmup=0, repeats=1)
    load_model(tiny.directory, parse_manifest(tiny.manifest), threads=3)
    assert [threads for threads, _ in built] == [2, 3]
    engine, endpoint = (options for _, options in built)
    for name in (
        "inter_op_num_threads",
        "execution_mode",
        "graph_optimization_level",
    ):
        assert getattr(engine, name) == getattr(endpoint, name), name
