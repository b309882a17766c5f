"""bench/serving's CPU accounting: the process's CPU time, the in-process curve and the split
of a request's CPU into the model's share and the rest; wrk's summary and the targets."""

from __future__ import annotations

import os

import pytest

from bench.serving.cpu import CurvePoint, ModelCurve, process_cpu_s, split_request_cpu
from bench.serving.report import markdown, targets
from bench.serving.wrk import parse_summary

pytestmark = pytest.mark.unit

CURVE = ModelCurve(
    [
        CurvePoint(1, cpu_ms_per_input=2.0, wall_ms_per_input=1.2, tokenize_cpu_ms_per_input=0.1),
        CurvePoint(4, cpu_ms_per_input=1.0, wall_ms_per_input=0.8, tokenize_cpu_ms_per_input=0.1),
        CurvePoint(16, cpu_ms_per_input=0.8, wall_ms_per_input=0.5, tokenize_cpu_ms_per_input=0.1),
    ]
)


def test_process_cpu_counts_this_process() -> None:
    before = process_cpu_s(os.getpid())
    sum(i * i for i in range(300_000))  # some work on this thread
    assert process_cpu_s(os.getpid()) > before


def test_curve_interpolates_on_log_batch_and_clamps() -> None:
    assert CURVE.at(1).cpu_ms_per_input == 2.0
    assert CURVE.at(0.5).cpu_ms_per_input == 2.0
    assert CURVE.at(64).cpu_ms_per_input == 0.8
    assert CURVE.at(2).cpu_ms_per_input == pytest.approx(1.5)  # halfway from 1 to 4 in log2
    assert CURVE.at(8).wall_ms_per_input == pytest.approx(0.65)
    assert CURVE.best().batch == 16
    assert ModelCurve.from_dict(CURVE.to_dict()).at(8).cpu_ms_per_input == pytest.approx(0.9)
    with pytest.raises(ValueError, match="point"):
        ModelCurve([])


def test_request_cpu_is_split_into_model_and_rest() -> None:
    split = split_request_cpu(3.0, 1000, CURVE, mean_batch=1.0)
    assert split == {"total_ms": 3.0, "model_ms": 2.0, "tokenize_ms": 0.1, "rest_ms": 1.0}
    batched = split_request_cpu(1.5, 1000, CURVE, mean_batch=4.0)
    assert batched["model_ms"] == 1.0
    assert batched["rest_ms"] == 0.5
    assert split_request_cpu(1.0, 0, CURVE, mean_batch=1.0)["total_ms"] != 1.0  # nan


def test_wrk_summary_is_parsed_with_socket_errors_counted() -> None:
    result = parse_summary(
        {
            "requests": 1000,
            "duration_us": 2_000_000,
            "bytes": 1,
            "errors": {"connect": 0, "read": 1, "write": 0, "status": 4, "timeout": 1},
            "latency_us": {"mean": 1500.0, "p50": 1200, "p90": 2000, "p95": 2500, "p99": 4000},
        },
        client_cpu_s=0.2,
    )
    assert result.requests == 1002
    assert result.ok == 996
    assert result.throughput_rps == pytest.approx(498.0)
    assert result.latency_ms["p50"] == 1.2


def _row(name: str, clients: int, rps: float, p50: float, p99: float, rest: float) -> dict:
    return {
        "deployment": name,
        "clients": clients,
        "requests_ok": 100,
        "non_2xx": 0,
        "socket_errors": 0,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50, "p99": p99},
        "mean_batch": 1.0,
        "server_cpu_ms_per_request": {
            "total_ms": 3.0,
            "model_ms": 2.0,
            "tokenize_ms": 0.1,
            "rest_ms": rest,
        },
        "client_cpu_ms_per_request": 0.05,
    }


def test_targets_state_each_point_met_or_not() -> None:
    results = [
        _row("compressed", 1, 500, 2.0, 3.0, 0.8),
        _row("compressed", 64, 1300, 40.0, 90.0, 0.5),
        _row("compressed-unbatched", 1, 510, 2.0, 3.0, 0.8),
        _row("compressed-unbatched", 64, 1000, 60.0, 90.0, 0.7),
        _row("teacher", 64, 300, 200.0, 300.0, 0.5),
    ]
    t = targets(results, {"compressed": CURVE.to_dict()})
    assert t["rest_cpu_ms_per_request"]["met"]
    assert t["single_client_p50_ms"]["met"]  # 2.0 <= 1.2 + 1.5
    assert t["http_vs_in_process_throughput"]["value"] == pytest.approx(0.65)  # 1300 / 2000
    assert t["http_vs_in_process_throughput"]["met"]
    assert t["compressed_vs_teacher_throughput"]["value"] == pytest.approx(4.333, abs=1e-3)
    assert t["compressed_vs_teacher_throughput"]["met"]
    assert not t["p99_vs_p50"]["met"]  # 90 / 40
    assert not t["batching_vs_one_at_a_time"]["met"]  # 500 / 510 at one client
    assert t["batching_vs_one_at_a_time"]["by_clients"] == {1: 0.98, 64: 1.3}
    text = markdown(
        {
            "command": "python -m bench.serving",
            "wall_s": 1.0,
            "machine": {
                "cpu": "x",
                "logical_cores": 2,
                "platform": "p",
                "python": "3.11",
                "onnxruntime": "1",
                "event_loop": "uvloop",
                "load_average_at_end": [0, 0, 0],
            },
            "loadgen": "wrk",
            "artifacts": {},
            "deployments": {},
            "threads": 2,
            "seconds_per_scenario": 1.0,
            "targets": t,
            "results": results,
            "model_in_process": {"compressed": CURVE.to_dict()},
        }
    )
    assert "**NOT met**" in text
    assert "| 1 | server CPU per request outside the model" in text
