"""results.json, results.md and results.png of the serving bench."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

TARGET = 3.0


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
    for r in results:
        if r["deployment"] == deployment and r["clients"] == clients:
            return r
    return None


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    top = max(r["clients"] for r in results)
    low = min(r["clients"] for r in results)
    batched = _find(results, "compressed", top)
    unbatched = _find(results, "compressed-unbatched", top)
    single = _find(results, "compressed", low)
    teacher = _find(results, "teacher", top)
    out: dict[str, Any] = {"at_clients": top, "single_client": low}
    if batched and unbatched and unbatched["throughput_rps"]:
        value = batched["throughput_rps"] / unbatched["throughput_rps"]
        out["batching_throughput_gain"] = {
            "value": round(value, 2),
            "target": f">= {TARGET}",
            "met": value >= TARGET,
        }
    if batched and single:
        p99 = batched["latency_ms"]["p99"]
        vs_p50 = p99 / single["latency_ms"]["p50"]
        vs_p99 = p99 / single["latency_ms"]["p99"]
        out["p99_vs_single_client_p50"] = {
            "value": round(vs_p50, 2),
            "target": f"<= {TARGET}",
            "met": vs_p50 <= TARGET,
        }
        out["p99_vs_single_client_p99"] = {
            "value": round(vs_p99, 2),
            "target": f"<= {TARGET}",
            "met": vs_p99 <= TARGET,
        }
    if batched and teacher and teacher["throughput_rps"]:
        value = batched["throughput_rps"] / teacher["throughput_rps"]
        out["compressed_vs_teacher_throughput"] = {
            "value": round(value, 2),
            "target": f">= {TARGET}",
            "met": value >= TARGET,
        }
    return out


def write_reports(
    out: Path,
    *,
    results: list[dict[str, Any]],
    model_only: dict[str, Any],
    command: str,
    artifacts: dict[str, Any],
    config: dict[str, Any],
    limits: dict[str, Any],
    wall_s: float,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = ratios(results)
    payload = {
        "command": command,
        "machine": machine_info(),
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
        "config": config,
        "limits": limits,
        "results": results,
        "model_only": model_only,
        "ratios": summary,
        "wall_s": round(wall_s, 1),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(_markdown(payload))
    _plot(results, out / "results.png")


def _markdown(p: dict[str, Any]) -> str:
    m = p["machine"]
    lines = [
        "# Serving bench (hosted inference over loopback HTTP)",
        "",
        f"Command: `{p['command']}` (wall time {p['wall_s']} s)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['platform']}, Python"
        f" {m['python']}, ONNX Runtime {m['onnxruntime']}, event loop {m['event_loop']};"
        f" load average at the end {m['load_average_at_end']}. The load generator (async httpx)"
        " runs on the same machine and competes with the server for the CPU; the machine was"
        " shared with other work, so absolute numbers are noisy: compare the ratios.",
        "",
        "Artifacts:",
        "",
    ]
    for name, a in p["artifacts"].items():
        lines.append(
            f"- `{name}`: {a['description']}; ONNX {a['onnx_mb']} MB, archive {a['archive_mb']} MB"
        )
    c = p["config"]
    lines += [
        "",
        f"Deployments: `compressed` and `teacher` with micro-batching {c['batched']};"
        f" `compressed-unbatched` with {c['unbatched']} (one request at a time);"
        f" ONNX Runtime intra-op threads {c['threads']}. One text per request, real Rotten"
        f" Tomatoes snippets; each scenario stops after {p['limits']['max_requests']} requests"
        f" or {p['limits']['max_seconds']} s.",
        "",
        "| deployment | clients | req/s | p50 ms | p95 ms | p99 ms | statuses |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in p["results"]:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['deployment']} | {r['clients']} | {r['throughput_rps']} | {lat['p50']} |"
            f" {lat['p95']} | {lat['p99']} | {r['statuses']} |"
        )
    lines += [
        "",
        f"Issue 4 targets, at {p['ratios']['at_clients']} clients, measured in this run:",
        "",
    ]
    names = {
        "batching_throughput_gain": "micro-batching / one-at-a-time throughput",
        "p99_vs_single_client_p50": "p99 latency / single-client p50 latency",
        "p99_vs_single_client_p99": "p99 latency / single-client p99 latency",
        "compressed_vs_teacher_throughput": "compressed / fp32 teacher throughput",
    }
    for key, label in names.items():
        if key in p["ratios"]:
            r = p["ratios"][key]
            lines.append(
                f"- {label}: **{r['value']}x** (target {r['target']}: {'met' if r['met'] else 'NOT met'})"
            )
    lines += [
        "",
        "The models alone, in-process, no HTTP (ms per input; CPU time counts every thread):",
        "",
        "| model | batch 1 wall | batch 1 CPU | batch 32 wall | batch 32 CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in p["model_only"].items():
        b1, b32 = m["batch_1"], m["batch_32"]
        lines.append(
            f"| {name} | {b1['wall_ms_per_input']} | {b1['cpu_ms_per_input']} |"
            f" {b32['wall_ms_per_input']} | {b32['cpu_ms_per_input']} |"
        )
    lines.append("")
    lines.append("![throughput and latency](results.png)")
    lines.append("")
    return "\n".join(lines)


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    for ax, title, ylabel in (
        (ax_t, "Throughput", "requests / s"),
        (ax_l, "Latency", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["clients"] for r in results}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_l.set_yscale("log")
    ax_t.legend(fontsize=8)
    ax_l.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
