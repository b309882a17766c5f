"""Final measurements: task metrics of a torch model or an ONNX file, and latency.

The compressed model's metrics are computed by running the *exported int8 file* (or the
torch int8 model when that runtime wins), so the accuracy reported is the accuracy of what
the user downloads, not of an fp32 model it was derived from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from sec_engine.artifact_contract.onnx_runtime import cpu_session
from sec_engine.data.encoding import Features, iter_batches
from sec_engine.evaluation.latency import onnx_feed
from sec_engine.evaluation.metrics import classification_metrics
from sec_engine.training import predict_logits


def onnx_logits(
    path: Path, features: Sequence[Features], batch_size: int, pad: int, threads: int
) -> np.ndarray:
    session = cpu_session(path, threads)
    out: np.ndarray | None = None
    for batch in iter_batches(features, batch_size, pad, by_length=True):
        logits = np.asarray(session.run(["logits"], onnx_feed(session, batch.inputs))[0])
        if out is None:
            out = np.zeros((len(features), logits.shape[1]), dtype=np.float32)
        out[batch.index] = logits
    if out is None:
        raise ValueError("no rows to evaluate")
    return out


def metrics_torch(
    model: nn.Module,
    features: Sequence[Features],
    labels: np.ndarray,
    batch_size: int,
    pad: int,
    device: object,
) -> dict[str, float]:
    import torch

    dev = device if isinstance(device, torch.device) else torch.device("cpu")
    return classification_metrics(predict_logits(model, features, batch_size, pad, dev), labels)


def metrics_onnx(
    path: Path,
    features: Sequence[Features],
    labels: np.ndarray,
    batch_size: int,
    pad: int,
    threads: int,
) -> dict[str, float]:
    return classification_metrics(onnx_logits(path, features, batch_size, pad, threads), labels)
