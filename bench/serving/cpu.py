"""CPU accounting for the serving bench: where a predict request's CPU goes.

- `process_cpu_s(pid)`: user + system seconds of a whole process, all of its threads (the
  event loop, the thread pools and ONNX Runtime's intra-op threads), read from /proc by
  psutil. Read before and after a scenario, the difference is what the server spent on it.
- `ModelCurve`: the model's own CPU and wall time per input at each batch size, measured
  in-process with the same thread count (no HTTP, no queue). `at(batch)` interpolates it at
  a scenario's mean batch size, so the server's CPU can be split into the model's share and
  the rest (HTTP, validation, auth, rate limit, batching, JSON).
- `split_request_cpu`: that split, per request.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far, all threads included."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class CurvePoint:
    batch: int
    cpu_ms_per_input: float  # the model alone (ONNX Runtime), every thread counted
    wall_ms_per_input: float
    tokenize_cpu_ms_per_input: float = 0.0  # the tokenizer, measured on the same batches

    @property
    def inputs_per_s(self) -> float:
        return 1000.0 / self.wall_ms_per_input if self.wall_ms_per_input > 0 else 0.0


class ModelCurve:
    """Per-input cost of the model by batch size, interpolated on log2(batch)."""

    def __init__(self, points: list[CurvePoint]) -> None:
        if not points:
            raise ValueError("a curve needs at least one point")
        self.points = sorted(points, key=lambda p: p.batch)

    def at(self, batch: float) -> CurvePoint:
        """The curve at a (possibly fractional) batch size, clamped to the measured range."""
        sizes = [p.batch for p in self.points]
        if batch <= sizes[0]:
            return self.points[0]
        if batch >= sizes[-1]:
            return self.points[-1]
        hi = bisect.bisect_left(sizes, batch)
        a, b = self.points[hi - 1], self.points[hi]
        t = (math.log2(batch) - math.log2(a.batch)) / (math.log2(b.batch) - math.log2(a.batch))

        def mix(x: float, y: float) -> float:
            return x + t * (y - x)

        return CurvePoint(
            batch=round(batch),
            cpu_ms_per_input=mix(a.cpu_ms_per_input, b.cpu_ms_per_input),
            wall_ms_per_input=mix(a.wall_ms_per_input, b.wall_ms_per_input),
            tokenize_cpu_ms_per_input=mix(a.tokenize_cpu_ms_per_input, b.tokenize_cpu_ms_per_input),
        )

    def best(self) -> CurvePoint:
        """The batch size with the highest in-process throughput."""
        return max(self.points, key=lambda p: p.inputs_per_s)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "batch": p.batch,
                "cpu_ms_per_input": round(p.cpu_ms_per_input, 3),
                "wall_ms_per_input": round(p.wall_ms_per_input, 3),
                "tokenize_cpu_ms_per_input": round(p.tokenize_cpu_ms_per_input, 3),
                "inputs_per_s": round(p.inputs_per_s, 1),
            }
            for p in self.points
        ]

    @classmethod
    def from_dict(cls, rows: list[Mapping[str, Any]]) -> ModelCurve:
        return cls(
            [
                CurvePoint(
                    int(r["batch"]),
                    float(r["cpu_ms_per_input"]),
                    float(r["wall_ms_per_input"]),
                    float(r.get("tokenize_cpu_ms_per_input", 0.0)),
                )
                for r in rows
            ]
        )


def split_request_cpu(
    server_cpu_s: float,
    requests: int,
    curve: ModelCurve,
    *,
    mean_batch: float,
    inputs_per_request: int = 1,
) -> dict[str, float]:
    """Server CPU per request, split into the model's share (from the in-process curve at the
    scenario's mean batch size), the tokenizer's and the rest (our request path)."""
    if requests <= 0:
        return {"total_ms": math.nan, "model_ms": math.nan, "tokenize_ms": math.nan}
    total = 1000.0 * server_cpu_s / requests
    point = curve.at(max(1.0, mean_batch))
    model = point.cpu_ms_per_input * inputs_per_request
    tokenize = point.tokenize_cpu_ms_per_input * inputs_per_request
    return {
        "total_ms": round(total, 3),
        "model_ms": round(model, 3),
        "tokenize_ms": round(tokenize, 3),
        "rest_ms": round(total - model, 3),
    }
