"""RESULTS.md and the PNG plots, rebuilt from whatever section files exist in bench/results/.

A section's full-run file (`<section>.json`) is preferred over its quick one
(`<section>.quick.json`); RESULTS.md says which each section comes from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT
from bench.suite import lambda_trace
from bench.tables import (
    Row,
    compression_table,
    labels_to_reach,
    pareto_front,
    ratio,
    training_table,
)

REPORT = ROOT / "bench" / "RESULTS.md"
ENGINE_TRACE = ROOT / "var" / "runs" / "engine_target" / "trace.jsonl"
PLOTS = {
    "pareto": "pareto_accuracy_latency.png",
    "lambda": "controller_lambda_trace.png",
    "labels": "label_efficiency.png",
}


def load_section(section: str, results: Path = RESULTS) -> dict[str, Any] | None:
    for name in (f"{section}.json", f"{section}.quick.json"):
        path = results / name
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            data["file"] = name
            return data
    return None


def variant_sections(section: str, results: Path = RESULTS) -> list[dict[str, Any]]:
    """Full runs of a section on another spec (`<section>.<spec stem>.json`, e.g. seed 1)."""
    out = []
    for path in sorted(results.glob(f"{section}.*.json")):
        if path.name.endswith(".quick.json"):
            continue
        data: dict[str, Any] = json.loads(path.read_text())
        data["file"] = path.name
        out.append(data)
    return out


def rows_of(section: dict[str, Any]) -> list[Row]:
    return [Row.from_dict(r) for r in section["rows"]]


def _find(rows: list[Row], group: str, name_start: str = "") -> Row | None:
    return next((r for r in rows if r.group == group and r.name.startswith(name_start)), None)


def headline(rows: list[Row]) -> list[str]:
    """Ratios of SEC combined against the baseline and against the peers, and the front."""
    base, sec = _find(rows, "baseline"), _find(rows, "sec", "SEC combined")
    if base is None or sec is None:
        return ["(the compression section has no SEC or baseline row yet)"]
    drop = 100 * ((sec.accuracy or 0) - (base.accuracy or 0))
    front = pareto_front(rows)
    on_front = any(r.name == sec.name for r in front)
    lines = [
        f"- **SEC combined vs the fp32 baseline teacher:** {ratio(base.size_mb, sec.size_mb)}× "
        f"smaller on disk, {ratio(base.latency_ms, sec.latency_ms)}× faster "
        f"(batch 32, seq 128, 2 threads), accuracy {drop:+.2f} points, using "
        f"{sec.labels_used} of {sec.labels_available} labels.",
    ]
    for peer in (r for r in rows if r.group == "peer"):
        acc = 100 * ((sec.accuracy or 0) - (peer.accuracy or 0))
        lines.append(
            f"- vs {peer.name}: {ratio(peer.size_mb, sec.size_mb)}× smaller, "
            f"{ratio(peer.latency_ms, sec.latency_ms)}× faster, accuracy {acc:+.2f} points."
        )
    dominating = [
        r.name
        for r in rows
        if r is not sec
        and r.accuracy is not None
        and r.latency_ms is not None
        and (r.accuracy >= (sec.accuracy or 0) and r.latency_ms <= (sec.latency_ms or 0))
    ]
    if on_front:
        lines.append("- **SEC combined is on the accuracy/latency Pareto front** of all rows.")
    else:
        lines.append(
            "- **SEC combined is NOT on the accuracy/latency Pareto front**: dominated by "
            + ", ".join(dominating)
            + "."
        )
    lines.append("- Pareto front (fastest first): " + " → ".join(r.name for r in front) + ".")
    return lines


def _pyplot() -> Any:
    """pyplot on the file-only backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(rows: list[Row], path: Path) -> None:
    plt = _pyplot()

    timed = [r for r in rows if r.accuracy is not None and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = {"baseline": "black", "sec-module": "tab:blue", "sec": "tab:red", "peer": "tab:green"}
    biggest = max((r.size_mb or 1.0) for r in timed)
    for r in timed:
        size = 40 + 900 * (r.size_mb or 0) / biggest
        ax.scatter(
            r.latency_ms or 0.0,
            100 * (r.accuracy or 0),
            s=size,
            alpha=0.55,
            color=colours.get(r.group, "grey"),
            edgecolors="black",
            linewidths=0.5,
        )
        ax.annotate(
            f"{r.name}\n{r.size_mb:.1f} MB",
            (r.latency_ms or 0, 100 * (r.accuracy or 0)),
            fontsize=7,
            xytext=(6, 4),
            textcoords="offset points",
        )
    front = pareto_front(timed)
    ax.plot(
        [r.latency_ms or 0.0 for r in front],
        [100 * (r.accuracy or 0) for r in front],
        "--",
        color="tab:red",
        lw=1,
        label="Pareto front",
    )
    ax.set_xlabel("latency, ms per batch (batch 32, seq 128, 2 threads; lower is better)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Accuracy vs latency (marker area ∝ size on disk)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lambda(rows: list[Row], path: Path) -> bool:
    plt = _pyplot()

    traced = [r for r in rows if r.extra.get("lambda_trace")]
    if not traced:
        return False
    fig, axes = plt.subplots(1, len(traced), figsize=(6 * len(traced), 4), squeeze=False)
    for ax, r in zip(axes[0], traced, strict=True):
        tr = r.extra["lambda_trace"]
        steps = [t["step"] for t in tr]
        ax.plot(steps, [t["lambda1"] for t in tr], marker="o", label="λ1 (data)")
        ax.plot(steps, [t["lambda2"] for t in tr], marker="s", label="λ2 (model)")
        acc = [t["val_accuracy"] for t in tr]
        if all(a is not None for a in acc):
            twin = ax.twinx()
            twin.plot(steps, [100 * a for a in acc], color="grey", alpha=0.5, label="val acc %")
            twin.set_ylabel("validation accuracy, %")
        ax.set_title(r.name)
        ax.set_xlabel("compression step")
        ax.set_ylabel("λ")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_labels(rows: list[Row], path: Path) -> None:
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = next((r for r in rows if r.extra.get("strategy") == "all"), None)
    for strategy, marker in (("random", "o"), ("entropy", "s")):
        pts = sorted(
            (r.extra["fraction"], 100 * (r.accuracy or 0))
            for r in rows
            if r.extra.get("strategy") == strategy
        )
        if full is not None:
            pts.append((1.0, 100 * (full.accuracy or 0)))
        label = "random sampling" if strategy == "random" else "TAL (entropy)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
    if full is not None:
        ax.axhline(100 * (full.accuracy or 0), color="black", ls=":", label="teacher, all labels")
    ax.set_xlabel("fraction of training labels used")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Label efficiency")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _provenance(sec: dict[str, Any]) -> str:
    m, load = sec["machine"], sec["load_average_1m_during_section"]
    kind = "FULL run" if sec["mode"] == "full" else "QUICK run (smoke: small data, short budgets)"
    return (
        f"*Source: `{sec['file']}`, {kind}, `{sec['command']}`, started {sec['started_utc']}, "
        f"{sec['wall_seconds'] / 60:.1f} min; seed {sec['seed']}; split rows "
        + ", ".join(f"{k} {v['rows']}" for k, v in sec["split"].items())
        + f". {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} threads, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, transformers {m['transformers']}; 1-min load average "
        f"mean {load['mean']}, max {load['max']} (shared machine).*"
    )


def label_summary(rows: list[Row]) -> list[str]:
    full = next((r for r in rows if r.extra.get("strategy") == "all"), None)
    if full is None or full.accuracy is None:
        return []
    out = []
    for tolerance in (0.0, 0.01):
        target = full.accuracy - tolerance
        for strategy in ("random", "entropy"):
            pts = [
                (r.extra["fraction"], r.accuracy or 0.0)
                for r in rows
                if r.extra.get("strategy") == strategy
            ]
            reached = labels_to_reach(pts, target)
            what = "the teacher's accuracy" if tolerance == 0 else "within 1 point of it"
            name = "TAL (entropy)" if strategy == "entropy" else "random sampling"
            out.append(
                f"- {name} reaches {what} at "
                + (
                    f"{reached:.0%} of the labels."
                    if reached is not None
                    else f"none of the measured fractions below 100% ({', '.join(f'{f:.0%}' for f, _ in sorted(pts))})."
                )
            )
    return out


def write_report(results: Path = RESULTS, report: Path = REPORT) -> str:
    comp, t1, labels = (load_section(s, results) for s in ("compression", "table1", "labels"))
    lines = [
        "# SEC benchmarks: the paper's tables",
        "",
        "Regenerate: `make bench` (full, hours on 2 cores) or `make bench BENCH_ARGS=--quick` "
        "(smoke: small data and short budgets; 13.1 min on a quiet 2-core box, 74 min on a loaded one); `python -m bench --report-only` rebuilds this file and the plots. "
        "MiniLM-L6 on Rotten Tomatoes, one seeded split, every row in the same run of its section. "
        "Sizes are the bytes on disk of the files the row's runtime loads; latencies are medians "
        "of interleaved rounds (all rows timed back to back each round).",
        "",
    ]
    found = {s: d for s, d in (("compression", comp), ("table1", t1), ("labels", labels)) if d}
    if found:
        lines += [
            "**Which run each section is from:** "
            + "; ".join(
                f"{s}: {'FULL' if d['mode'] == 'full' else 'QUICK (smoke only)'} (`{d['file']}`)"
                for s, d in found.items()
            )
            + ". Quick numbers come from a few hundred rows and minute budgets: they check "
            "the wiring and say nothing about the targets.",
            "",
        ]
    if comp is not None:
        rows = rows_of(comp)
        base = _find(rows, "baseline")
        lines += ["## Headline", "", _provenance(comp), "", *headline(rows), ""]
        plot_pareto(rows, results / PLOTS["pareto"])
        lines += ["## Tables 2-4 analogue: compression modules, SEC and the peers", ""]
        if base is not None:
            lines += [compression_table(rows, base), ""]
        lines += ["How each row was made:", ""]
        lines += [f"- **{r.name}** ({r.group}): {r.how}" for r in rows]
        lines += ["", f"![accuracy vs latency](results/{PLOTS['pareto']})", ""]
        traced = rows
        source = "the SEC rows of this section"
        if not any(r.extra.get("lambda_trace") for r in rows) and ENGINE_TRACE.is_file():
            # A quick run's SEC jobs may end before the controller's first evaluation; the
            # engine target run (same spec, full data) then supplies the trace, said so.
            traced = [
                Row(
                    "SEC, engine target run",
                    "compression",
                    "sec",
                    extra={"lambda_trace": lambda_trace(ENGINE_TRACE)},
                )
            ]
            source = "the engine target run (`python -m bench.engine_target`, full data)"
        if plot_lambda(traced, results / PLOTS["lambda"]):
            lines += [
                "### Synergy Controller: λ1/λ2 during compression",
                "",
                f"Trace from {source}.",
                "",
                f"![lambda trace](results/{PLOTS['lambda']})",
                "",
            ]
    if t1 is not None:
        rows = rows_of(t1)
        base = rows[0]
        lines += [
            "## Table 1 analogue: training time and accuracy of the data modules",
            "",
            _provenance(t1),
            "",
            training_table(rows, base),
            "",
            "Training time is the job's wall time up to evaluation (preparing, teacher, data, "
            "compression); measuring and export, the same for every row, are left out.",
            "",
        ]
    if labels is not None:
        rows = rows_of(labels)
        plot_labels(rows, results / PLOTS["labels"])
        lines += [
            "## Label efficiency: random sampling vs TAL",
            "",
            _provenance(labels),
            "",
            *label_summary(rows),
            "",
            "| labels | strategy | accuracy | macro-F1 | labels used |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.extra['fraction']:.0%} | {r.extra['strategy']} | {r.accuracy:.4f} | "
            f"{r.macro_f1:.4f} | {r.labels_used} of {r.labels_available} |"
            for r in rows
        ]
        lines += ["", f"![label efficiency](results/{PLOTS['labels']})", ""]
    waterfall = load_section("waterfall", results)
    if waterfall is not None:
        from bench.waterfall import waterfall_markdown

        for i, run in enumerate([waterfall, *variant_sections("waterfall", results)]):
            title = "## Drop waterfall: what each step costs, and the naive pipeline"
            lines += [
                title
                if i == 0
                else f"### The same waterfall on `{run['file']}` (seed {run['seed']})",
                "",
                _provenance(run),
                "",
                *waterfall_markdown(run),
                "",
            ]
    missing = [
        s
        for s, d in (
            ("compression", comp),
            ("table1", t1),
            ("labels", labels),
            ("waterfall", waterfall),
        )
        if d is None
    ]
    if missing:
        lines += [
            "## Not measured yet",
            "",
            "Sections with no result file: " + ", ".join(missing) + ".",
            "",
        ]
    text = "\n".join(lines)
    report.write_text(text)
    return text
