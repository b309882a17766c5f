"""Latency in ms per batch, always stated with batch size, sequence length, threads, runtime.

Inputs are a fixed batch of real texts padded to `seq_len` (see
`sec_engine.data.encoding.fixed_length_batch`), so every model is timed on identical work.
The reported number is the median of `repeats` timed runs after `warmup` untimed ones; the
median resists the noise of a shared machine better than the mean.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The hosted endpoint builds its sessions with the same function, so the latency written to
# the manifest is measured with the options the endpoint runs with.
from sec_engine.artifact_contract.onnx_runtime import cpu_session


@dataclass(frozen=True)
class Latency:
    ms_per_batch: float
    batch_size: int
    seq_len: int
    threads: int
    runtime: str  # "torch-fp32", "torch-int8", "onnxruntime-fp32", "onnxruntime-int8", ...
    device: str = "cpu"

    @property
    def throughput(self) -> float:
        """Rows per second at this batch size."""
        return self.batch_size / (self.ms_per_batch / 1000.0) if self.ms_per_batch else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["throughput_per_s"] = round(self.throughput, 2)
        return d


def _median_ms(run: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def time_torch(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    threads: int,
    runtime: str,
    warmup: int = 1,
    repeats: int = 5,
) -> Latency:
    """Time a torch model on CPU with `threads` intra-op threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            ms = _median_ms(lambda: model(**inputs), warmup, repeats)
    finally:
        torch.set_num_threads(previous)
    batch, seq = inputs["input_ids"].shape
    return Latency(ms, int(batch), int(seq), threads, runtime)


def onnx_feed(session: Any, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    return {k: v.numpy().astype(np.int64) for k, v in inputs.items() if k in names}


def time_onnx(
    path: Path,
    inputs: dict[str, torch.Tensor],
    *,
    threads: int,
    runtime: str,
    warmup: int = 1,
    repeats: int = 5,
) -> Latency:
    session = cpu_session(path, threads)
    feed = onnx_feed(session, inputs)
    ms = _median_ms(lambda: session.run(None, feed), warmup, repeats)
    batch, seq = inputs["input_ids"].shape
    return Latency(ms, int(batch), int(seq), threads, runtime)
