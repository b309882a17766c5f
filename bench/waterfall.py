"""The drop waterfall: how many accuracy points each step from the fp32 teacher to
the shipped int8 student costs, on one split, and the naive pipeline at equal size.

    python -m bench --sections waterfall [--spec bench/specs/minilm_rt_seed1.yaml --work var/bench/seed1]

Every row is a job on the same seeded split; the compression rows start from the suite's
baseline teacher (all labels), so each step changes one thing:

1. label budget       the SEC job's own teacher (TAL, `label_budget`) vs the all-label teacher;
2. layers             a `student_layers` student distilled (logits + hidden states), fp32;
3. head/FFN pruning   + AIP to the spec's sparsity (fixed λ), fp32;
4. vocabulary         + vocabulary pruning, fp32;
5. int8 (PTQ)         that model through ONNX Runtime dynamic int8: the **naive pipeline**
                      (fine-tune on all labels -> distil -> prune -> PTQ, no TAL / ADA /
                      controller / QAT);
6. int8 (QAT)         the same student trained through int8 fake quantization instead;
7. SEC                the user's spec as written: TAL on the label budget, ADA, the adaptive
                      controller, QAT.

Steps 1 and 7 share the SEC job (its manifest holds its own teacher's test accuracy, measured
by the engine on the same split). The naive and SEC rows are also timed side by side
(batch 32, seq 128), so "SEC vs naive at equal size and speed" is read off one table.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench.measure import (
    Candidate,
    apply_latency,
    fp32_candidates,
    release,
    test_metrics,
    time_interleaved,
)
from bench.tables import Row
from bench.variants import from_teacher, variant
from sec_engine.artifact_contract import HF_DIR, ONNX_INT8

if TYPE_CHECKING:
    from bench.suite import Context, JobRun


def section_waterfall(ctx: Context) -> dict[str, Any]:
    from bench.suite import _job_row, baseline_teacher, run_variant

    base = baseline_teacher(ctx)
    teacher_dir = base.out_dir / HF_DIR
    on_teacher = from_teacher(ctx.spec, str(teacher_dir))
    scratch = ctx.work / "scratch" / "waterfall"
    scratch.mkdir(parents=True, exist_ok=True)
    fp32_sqd = {"qat": False, "prune_vocabulary": False}
    jobs = {
        # the same key and spec as the compression section's KD row, so one run serves both
        "kd": variant(on_teacher, on={"sqd": fp32_sqd}),
        "kd_aip": variant(on_teacher, on={"sqd": fp32_sqd, "aip": {}}, adaptive=False),
        "naive": variant(
            on_teacher,
            on={"sqd": {"qat": False, "prune_vocabulary": True}, "aip": {}},
            adaptive=False,
        ),
        "compress_qat": variant(
            on_teacher,
            on={"sqd": {"qat": True, "prune_vocabulary": True}, "aip": {}},
            adaptive=False,
        ),
    }
    runs: dict[str, JobRun] = {
        key: run_variant(ctx, key, spec, str(teacher_dir)) for key, spec in jobs.items()
    }
    runs["sec"] = run_variant(ctx, "sec", ctx.spec)

    def fp32(key: str) -> list[Candidate]:
        d = scratch / key
        d.mkdir(parents=True, exist_ok=True)
        return fp32_candidates(runs[key].out_dir / HF_DIR, ctx.data, d)

    def int8(key: str) -> list[Candidate]:
        out = runs[key].out_dir
        return [Candidate("onnxruntime-int8", out / HF_DIR, onnx_path=out / ONNX_INT8)]

    base_d = scratch / "baseline"
    base_d.mkdir(parents=True, exist_ok=True)
    cands: dict[str, list[Candidate]] = {
        "reference teacher (all labels), fp32": fp32_candidates(teacher_dir, ctx.data, base_d),
        "layer-dropped student (KD), fp32": fp32("kd"),
        "+ head/FFN pruning, fp32": fp32("kd_aip"),
        "+ vocabulary pruning, fp32": fp32("naive"),
        "naive pipeline: + ONNX Runtime int8 PTQ": int8("naive"),
        "+ QAT int8 instead of PTQ": int8("compress_qat"),
        "SEC (TAL, ADA, adaptive controller, QAT)": int8("sec"),
    }
    how = {
        "reference teacher (all labels), fp32": "the suite's baseline: fine-tuned on every label",
        "layer-dropped student (KD), fp32": "logit + hidden-state distillation from the reference",
        "+ head/FFN pruning, fp32": "AIP to the spec's head/FFN sparsity, fixed λ, no QAT",
        "+ vocabulary pruning, fp32": "as above, then the vocabulary cut to the tokens seen",
        "naive pipeline: + ONNX Runtime int8 PTQ": "the row above, int8 after training (PTQ)",
        "+ QAT int8 instead of PTQ": "the same student trained through int8 fake quantization",
        "SEC (TAL, ADA, adaptive controller, QAT)": "the user's spec as written",
    }
    keys = {
        "layer-dropped student (KD), fp32": "kd",
        "+ head/FFN pruning, fp32": "kd_aip",
        "+ vocabulary pruning, fp32": "naive",
        "naive pipeline: + ONNX Runtime int8 PTQ": "naive",
        "+ QAT int8 instead of PTQ": "compress_qat",
        "SEC (TAL, ADA, adaptive controller, QAT)": "sec",
    }
    rows: list[Row] = []
    for name, options in cands.items():
        run = runs[keys[name]] if name in keys else base
        group = "baseline" if run is base else "sec" if keys.get(name) == "sec" else "waterfall"
        row = _job_row(name, "waterfall", group, run, how[name])
        m = test_metrics(options[0], ctx.data, ctx.max_len)
        row.accuracy, row.macro_f1, row.perplexity = (
            round(float(m[k]), 6) for k in ("accuracy", "macro_f1", "perplexity")
        )
        rows.append(row)
        print(f"[bench] waterfall {name}: accuracy {row.accuracy:.4f}", file=sys.stderr)
    sec_teacher = runs["sec"].manifest["teacher"]
    teacher_row = Row(
        "SEC job's own teacher (label budget), fp32",
        "waterfall",
        "waterfall",
        runtime=sec_teacher["latency"]["runtime"],
        accuracy=round(float(sec_teacher["accuracy"]), 6),
        macro_f1=round(float(sec_teacher["macro_f1"]), 6),
        labels_used=runs["sec"].manifest["labels_used"],
        labels_available=runs["sec"].manifest["labels_available"],
        how="measured by the SEC job itself on the same test split (from its manifest)",
    )
    rows.insert(1, teacher_row)
    timed = {k: v for k, v in cands.items() if k.startswith(("reference", "naive", "SEC", "+ QAT"))}
    apply_latency(
        rows,
        timed,
        time_interleaved(
            [(name, c) for name, options in timed.items() for c in options],
            ctx.data,
            rounds=ctx.mode.rounds,
            repeats=ctx.mode.repeats,
        ),
    )
    release(cands)
    return {"rows": [r.to_dict() for r in rows], "steps": waterfall_steps(rows)}


def waterfall_steps(rows: list[Row]) -> list[dict[str, Any]]:
    """Points each step costs (negative = lost), from the rows above (pure; unit-tested)."""
    acc = {r.name: r.accuracy for r in rows}

    def delta(after: str, before: str) -> float | None:
        a, b = acc.get(after), acc.get(before)
        return None if a is None or b is None else round(100 * (a - b), 3)

    ref = "reference teacher (all labels), fp32"
    return [
        {"step": "label budget (teacher)", "points": delta(rows[1].name, ref)},
        {"step": "layers (KD)", "points": delta("layer-dropped student (KD), fp32", ref)},
        {
            "step": "head/FFN pruning",
            "points": delta("+ head/FFN pruning, fp32", "layer-dropped student (KD), fp32"),
        },
        {
            "step": "vocabulary pruning",
            "points": delta("+ vocabulary pruning, fp32", "+ head/FFN pruning, fp32"),
        },
        {
            "step": "int8, PTQ (naive pipeline)",
            "points": delta(
                "naive pipeline: + ONNX Runtime int8 PTQ", "+ vocabulary pruning, fp32"
            ),
        },
        {
            "step": "int8, QAT instead of PTQ",
            "points": delta("+ QAT int8 instead of PTQ", "naive pipeline: + ONNX Runtime int8 PTQ"),
        },
        {
            "step": "SEC's data side and controller (TAL, ADA, adaptive λ)",
            "points": delta(
                "SEC (TAL, ADA, adaptive controller, QAT)", "+ QAT int8 instead of PTQ"
            ),
        },
        {
            "step": "total: SEC vs the reference teacher",
            "points": delta("SEC (TAL, ADA, adaptive controller, QAT)", ref),
        },
        {
            "step": "SEC vs the naive pipeline",
            "points": delta(
                "SEC (TAL, ADA, adaptive controller, QAT)",
                "naive pipeline: + ONNX Runtime int8 PTQ",
            ),
        },
    ]


def waterfall_markdown(section: dict[str, Any]) -> list[str]:
    """The section's table for RESULTS.md."""
    rows = [Row.from_dict(r) for r in section["rows"]]
    lines = [
        "| row | accuracy | size MB | ms/batch (b32, s128) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        size = "" if r.size_mb is None else f"{r.size_mb:.2f}"
        lat = "" if r.latency_ms is None else f"{r.latency_ms:.1f}"
        lines.append(f"| {r.name} | {r.accuracy:.4f} | {size} | {lat} |")
    lines += ["", "| step | points |", "| --- | --- |"]
    for step in section["steps"]:
        points = step["points"]
        lines.append(f"| {step['step']} | {'' if points is None else f'{points:+.2f}'} |")
    return lines
