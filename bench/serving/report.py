"""results.json, results.md and results.png of the serving bench, with the serving targets."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from bench.serving.cpu import ModelCurve

LOADGEN = {
    "wrk": "wrk (C, epoll, one thread; request bytes prebuilt by a Lua script)",
    "python": "async httpx, one client and connection per simulated user (no wrk installed)",
}
REST_MS_TARGET = 1.0
P50_SLACK_MS = 1.5
HTTP_VS_INPROCESS_TARGET = 0.6
VS_TEACHER_TARGET = 3.5
BATCHING_TARGET = 1.0
P99_VS_P50_TARGET = 2.0


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    try:
        import uvloop  # noqa: F401

        loop = "uvloop (uvicorn's default when installed)"
    except ImportError:
        loop = "asyncio"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "event_loop": loop,
    }


def _find(results: list[dict[str, Any]], deployment: str, clients: int) -> dict[str, Any] | None:
    return next(
        (r for r in results if r["deployment"] == deployment and r["clients"] == clients), None
    )


def _target(value: float, target: float, *, at_most: bool) -> dict[str, Any]:
    met = value <= target if at_most else value >= target
    return {"value": round(value, 3), "target": f"{'<=' if at_most else '>='} {target}", "met": met}


def targets(results: list[dict[str, Any]], curves: dict[str, Any]) -> dict[str, Any]:
    """Serving targets 1-4 (docs/DESIGN_NOTES.md#targets), from this run (5 and 6 are measured
    elsewhere)."""
    low = min(r["clients"] for r in results)
    top = max(r["clients"] for r in results)
    out: dict[str, Any] = {"single_client": low, "at_clients": top}
    compressed = ModelCurve.from_dict(curves["compressed"])
    single = _find(results, "compressed", low)
    if single:
        out["rest_cpu_ms_per_request"] = _target(
            single["server_cpu_ms_per_request"]["rest_ms"], REST_MS_TARGET, at_most=True
        )
        in_process = compressed.at(1).wall_ms_per_input
        out["single_client_p50_ms"] = {
            **_target(single["latency_ms"]["p50"], in_process + P50_SLACK_MS, at_most=True),
            "model_in_process_ms": round(in_process, 3),
        }
    batched = _find(results, "compressed", top)
    if batched:
        best = compressed.best()
        out["http_vs_in_process_throughput"] = {
            **_target(
                batched["throughput_rps"] / best.inputs_per_s,
                HTTP_VS_INPROCESS_TARGET,
                at_most=False,
            ),
            "in_process_inputs_per_s": round(best.inputs_per_s, 1),
            "in_process_batch": best.batch,
        }
        p50 = batched["latency_ms"]["p50"]
        out["p99_vs_p50"] = _target(
            batched["latency_ms"]["p99"] / p50 if p50 else float("inf"),
            P99_VS_P50_TARGET,
            at_most=True,
        )
    teacher = _find(results, "teacher", top)
    if batched and teacher and teacher["throughput_rps"]:
        out["compressed_vs_teacher_throughput"] = _target(
            batched["throughput_rps"] / teacher["throughput_rps"], VS_TEACHER_TARGET, at_most=False
        )
    gains = {}
    for r in results:
        if r["deployment"] == "compressed":
            one = _find(results, "compressed-unbatched", r["clients"])
            if one and one["throughput_rps"]:
                gains[r["clients"]] = round(r["throughput_rps"] / one["throughput_rps"], 3)
    if gains:
        out["batching_vs_one_at_a_time"] = {
            **_target(min(gains.values()), BATCHING_TARGET, at_most=False),
            "by_clients": gains,
        }
    return out


def write_reports(
    out: Path,
    *,
    suffix: str,
    results: list[dict[str, Any]],
    curves: dict[str, Any],
    command: str,
    artifacts: dict[str, Any],
    deployments: dict[str, Any],
    loadgen: str,
    threads: int,
    seconds: float,
    wall_s: float,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "machine": machine_info(),
        "loadgen": LOADGEN[loadgen],
        "threads": threads,
        "seconds_per_scenario": seconds,
        "artifacts": {
            name: {
                "description": a.description,
                "archive_mb": round(a.archive.stat().st_size / 2**20, 2),
                "onnx_mb": round(
                    max(v for k, v in a.manifest["file_sizes"].items() if k.endswith(".onnx"))
                    / 2**20,
                    2,
                ),
            }
            for name, a in artifacts.items()
        },
        "deployments": deployments,
        "model_in_process": curves,
        "results": results,
        "targets": targets(results, curves),
        "wall_s": round(wall_s, 1),
    }
    (out / f"results{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"results{suffix}.md").write_text(markdown(payload, plot=f"results{suffix}.png"))
    _plot(results, out / f"results{suffix}.png")


def _verdict(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "**NOT met**"


def markdown(p: dict[str, Any], plot: str = "results.png") -> str:
    m, t = p["machine"], p["targets"]
    lines = [
        "# Serving bench (hosted inference over loopback HTTP)",
        "",
        f"Command: `{p['command']}` (wall time {p['wall_s']} s)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['platform']}, Python"
        f" {m['python']}, ONNX Runtime {m['onnxruntime']}, event loop {m['event_loop']};"
        f" load average at the end {m['load_average_at_end']}. Load generator: {p['loadgen']},"
        " on the same machine (its own CPU per request is in the table).",
        "",
        "Artifacts:",
        "",
    ]
    for name, a in p["artifacts"].items():
        lines.append(
            f"- `{name}`: {a['description']}; ONNX {a['onnx_mb']} MB, archive {a['archive_mb']} MB"
        )
    lines += [
        "",
        "Deployments (their stored config; `compressed` and `teacher` run the server's"
        " defaults, whose largest batch each deployment picks from its own measured curve):"
        f" {p['deployments']}. ONNX Runtime intra-op threads {p['threads']}. One text per"
        f" request, real Rotten Tomatoes snippets, {p['seconds_per_scenario']} s per scenario.",
        "",
        "## Targets (docs/DESIGN_NOTES.md#targets)",
        "",
        "| # | target | measured | verdict |",
        "|---|---|---:|---|",
    ]
    rows = []
    if "rest_cpu_ms_per_request" in t:
        x = t["rest_cpu_ms_per_request"]
        rows.append(
            f"| 1 | server CPU per request outside the model, 1 client: {x['target']} ms |"
            f" {x['value']} ms | {_verdict(x)} |"
        )
    if "single_client_p50_ms" in t:
        x = t["single_client_p50_ms"]
        rows.append(
            f"| 1 | single-client p50 <= model in-process ({x['model_in_process_ms']} ms)"
            f" + {P50_SLACK_MS} ms | {x['value']} ms | {_verdict(x)} |"
        )
    if "http_vs_in_process_throughput" in t:
        x = t["http_vs_in_process_throughput"]
        rows.append(
            f"| 2 | HTTP throughput at {t['at_clients']} clients / in-process at its best batch"
            f" ({x['in_process_inputs_per_s']}/s at batch {x['in_process_batch']}): {x['target']}"
            f" | {x['value']} | {_verdict(x)} |"
        )
    if "compressed_vs_teacher_throughput" in t:
        x = t["compressed_vs_teacher_throughput"]
        rows.append(
            f"| 3 | compressed / teacher throughput over HTTP at {t['at_clients']} clients:"
            f" {x['target']} | {x['value']}x | {_verdict(x)} |"
        )
    if "batching_vs_one_at_a_time" in t:
        x = t["batching_vs_one_at_a_time"]
        rows.append(
            f"| 4 | micro-batching / one-at-a-time throughput at every concurrency: {x['target']}"
            f" | {x['by_clients']} (min {x['value']}) | {_verdict(x)} |"
        )
    if "p99_vs_p50" in t:
        x = t["p99_vs_p50"]
        rows.append(
            f"| 4 | p99 / p50 at {t['at_clients']} clients: {x['target']} | {x['value']} |"
            f" {_verdict(x)} |"
        )
    rows.append(
        "| 5 | `make load-sdk`, 100 clients starting in the same second: p99 < 200 ms, 0 failures"
        " | not measured by this bench: `SEC_LOAD_SPAWN_RATE=100 make load-sdk` | - |"
    )
    rows.append("| 6 | the same bench on a GPU | not run (no GPU) | - |")
    lines += rows
    lines += [
        "",
        "## Scenarios",
        "",
        "Server CPU per request is the API process's CPU time (every thread) over the scenario"
        " divided by the requests answered; `model` is the in-process CPU of the ONNX Runtime"
        " calls per input at the scenario's mean batch size, `tokenize` the tokenizer's (inside"
        " `rest`), `rest` = total - model: HTTP, validation, auth, rate limit, batching,"
        " tokenisation, JSON.",
        "",
        "| deployment | clients | req/s | p50 ms | p99 ms | mean batch | server CPU ms/req |"
        " model | tokenize | rest | loadgen CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["results"]:
        lat, cpu = r["latency_ms"], r["server_cpu_ms_per_request"]
        lines.append(
            f"| {r['deployment']} | {r['clients']} | {r['throughput_rps']} | {lat['p50']} |"
            f" {lat['p99']} | {r['mean_batch']} | {cpu['total_ms']} | {cpu['model_ms']} |"
            f" {cpu['tokenize_ms']} | {cpu['rest_ms']} | {r['client_cpu_ms_per_request']} |"
            f" {r['non_2xx'] + r['socket_errors']} |"
        )
    lines += [
        "",
        "## The models alone, in-process (no HTTP, no queue, same threads and texts)",
        "",
        "| model | batch | model CPU ms/input | tokenize CPU ms/input | predict wall ms/input |"
        " inputs/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, points in p["model_in_process"].items():
        for x in points:
            lines.append(
                f"| {name} | {x['batch']} | {x['cpu_ms_per_input']} |"
                f" {x['tokenize_cpu_ms_per_input']} | {x['wall_ms_per_input']} |"
                f" {x['inputs_per_s']} |"
            )
    lines += ["", f"![throughput and latency]({plot})", ""]
    return "\n".join(lines)


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l, ax_c) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in dict.fromkeys(r["deployment"] for r in results):
        rows = sorted((r for r in results if r["deployment"] == name), key=lambda r: r["clients"])
        xs = [r["clients"] for r in rows]
        ax_t.plot(xs, [r["throughput_rps"] for r in rows], marker="o", label=name)
        ax_l.plot(xs, [r["latency_ms"]["p99"] for r in rows], marker="o", label=f"{name} p99")
        ax_l.plot(
            xs,
            [r["latency_ms"]["p50"] for r in rows],
            linestyle="--",
            alpha=0.6,
            label=f"{name} p50",
        )
        ax_c.plot(
            xs,
            [r["server_cpu_ms_per_request"]["rest_ms"] for r in rows],
            marker="o",
            label=f"{name} rest",
        )
    for ax, title, ylabel in (
        (ax_t, "Throughput", "requests / s"),
        (ax_l, "Latency", "ms"),
        (ax_c, "Server CPU per request outside the model", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["clients"] for r in results}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_l.set_yscale("log")
    ax_c.axhline(REST_MS_TARGET, color="grey", linestyle=":", label="target")
    for ax in (ax_t, ax_l, ax_c):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
