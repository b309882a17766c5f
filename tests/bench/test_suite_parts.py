"""The benchmark suite's pure parts: row schema, Pareto front, tables, report, spec variants,
and the zero-structure stripping used to time pruned models (tiny random-init BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import write_report
from bench.tables import (
    Row,
    compression_table,
    labels_to_reach,
    pareto_front,
    ratio,
    training_table,
)

pytestmark = pytest.mark.unit


def row(name: str, acc: float, ms: float, mb: float = 10.0, group: str = "peer") -> Row:
    return Row(
        name,
        "compression",
        group,
        runtime="onnxruntime-int8",
        accuracy=acc,
        macro_f1=acc,
        perplexity=1.5,
        size_mb=mb,
        size_files="x",
        latency_ms=ms,
    )


def test_pareto_front_keeps_only_undominated_rows_sorted_by_latency() -> None:
    rows = [
        row("slow-accurate", 0.90, 800.0),
        row("fast-weak", 0.80, 100.0),
        row("dominated", 0.79, 300.0),  # fast-weak is faster and more accurate
        row("middle", 0.85, 200.0),
        row("tie-slower", 0.85, 250.0),  # same accuracy as middle, slower
        Row("untimed", "compression", "peer", accuracy=0.99),  # no latency: not comparable
    ]
    assert [r.name for r in pareto_front(rows)] == ["fast-weak", "middle", "slow-accurate"]


def test_identical_rows_are_both_on_the_front() -> None:
    a, b = row("a", 0.8, 100.0), row("b", 0.8, 100.0)
    assert {r.name for r in pareto_front([a, b])} == {"a", "b"}


def test_row_schema_round_trips_and_rejects_unknown_fields() -> None:
    r = row("x", 0.8, 100.0)
    r.extra["latency_runs_ms"] = {"onnxruntime-int8": [99.0, 101.0]}
    again = Row.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
    with pytest.raises(ValueError, match="bogus"):
        Row.from_dict({**r.to_dict(), "bogus": 1})


def test_tables_render_ratios_against_the_baseline() -> None:
    base = row("baseline", 0.85, 800.0, mb=86.0, group="baseline")
    sec = row("SEC combined", 0.84, 200.0, mb=8.6, group="sec")
    text = compression_table([base, sec], base)
    line = next(x for x in text.splitlines() if x.startswith("| SEC combined"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "10.00"  # × smaller
    assert cells[5] == "4.00"  # × faster
    assert cells[7] == "-1.00"  # accuracy points vs baseline
    base.train_seconds, sec.train_seconds = 100.0, 50.0
    t1 = training_table([base, sec], base)
    assert "| SEC combined | 50 | 0.50 |" in t1
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None


def test_labels_to_reach_is_the_smallest_fraction_at_or_above_target() -> None:
    pts = [(0.5, 0.84), (0.1, 0.70), (0.25, 0.86)]
    assert labels_to_reach(pts, 0.85) == 0.25
    assert labels_to_reach(pts, 0.95) is None


def _section(name: str, rows: list[Row], mode: str = "quick") -> dict[str, object]:
    return {
        "schema_version": 1,
        "section": name,
        "mode": mode,
        "command": "python -m bench --quick",
        "started_utc": "2026-01-01T00:00:00+00:00",
        "wall_seconds": 60.0,
        "seed": 0,
        "split": {"train": {"rows": 10, "sha256_16": "0"}},
        "machine": {
            "cpu": "cpu",
            "cpu_count": 2,
            "torch_threads": 2,
            "torch": "t",
            "onnxruntime": "o",
            "transformers": "tr",
        },
        "load_average_1m_during_section": {"mean": 1.0, "max": 2.0, "n": 3},
        "rows": [r.to_dict() for r in rows],
    }


def test_report_says_when_sec_is_off_the_front_and_which_run_each_section_is_from(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    sec = row("SEC combined", 0.80, 300.0, mb=8.0, group="sec")
    sec.extra["lambda_trace"] = [
        {"step": 50, "lambda1": 0.5, "lambda2": 0.6, "val_accuracy": 0.8, "rule": "r"},
        {"step": 100, "lambda1": 0.45, "lambda2": 0.7, "val_accuracy": 0.81, "rule": "r"},
    ]
    comp = [
        row("baseline", 0.85, 800.0, mb=86.0, group="baseline"),
        sec,
        row("ONNX Runtime dynamic int8 PTQ", 0.84, 250.0, mb=22.0),
    ]
    (results / "compression.quick.json").write_text(json.dumps(_section("compression", comp)))
    labels = [
        Row(
            "all labels",
            "labels",
            "label-efficiency",
            accuracy=0.85,
            macro_f1=0.85,
            labels_used=100,
            labels_available=100,
            extra={"fraction": 1.0, "strategy": "all"},
        )
    ]
    for strategy, acc in (("random", 0.80), ("entropy", 0.85)):
        labels.append(
            Row(
                f"{strategy} 50%",
                "labels",
                "label-efficiency",
                accuracy=acc,
                macro_f1=acc,
                labels_used=50,
                labels_available=100,
                extra={"fraction": 0.5, "strategy": strategy},
            )
        )
    (results / "labels.json").write_text(json.dumps(_section("labels", labels, mode="full")))

    text = write_report(results, tmp_path / "RESULTS.md")

    assert "NOT on the accuracy/latency Pareto front" in text
    assert "dominated by ONNX Runtime dynamic int8 PTQ" in text
    assert "QUICK run" in text
    assert "FULL run" in text
    assert "TAL (entropy) reaches the teacher's accuracy at 50% of the labels" in text
    assert "Sections with no result file: table1" in text
    for png in (
        "pareto_accuracy_latency.png",
        "controller_lambda_trace.png",
        "label_efficiency.png",
    ):
        assert (results / png).stat().st_size > 1000


def test_variant_switches_techniques_and_validates() -> None:
    from bench.variants import from_teacher, variant
    from sec_engine.spec import JobSpec

    spec = JobSpec(dataset="d.csv", budget={"label_budget": 0.7})
    v = variant(spec, on={"aip": {"target_head_sparsity": 0.25}})
    assert (v.techniques.aip.enabled, v.techniques.aip.target_head_sparsity) == (True, 0.25)
    assert not (v.techniques.tal.enabled)
    assert not (v.techniques.ada.enabled)
    assert not (v.techniques.sqd.enabled)
    assert v.budget.label_budget == 1.0
    with pytest.raises(ValueError, match="label_budget"):
        variant(spec, label_budget=0.5)  # without TAL nothing may spend a label budget
    assert from_teacher(v, "/t").training.teacher_epochs == 0.0


def test_stripping_zero_structures_keeps_logits_and_shrinks_the_model(tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from bench.measure import strip_zero_structures
    from sec_engine.models.arch import layer_views

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    v = layer_views(model)[0]
    with torch.no_grad():  # zero head 1 and FFN neurons 0..9 as a zero-padded save would
        rows = slice(v.head_dim, 2 * v.head_dim)
        for lin in (v.query, v.key, v.value):
            lin.weight[rows] = 0
            lin.bias[rows] = 0
        v.attn_out.weight[:, rows] = 0
        v.ffn_in.weight[:10] = 0
        v.ffn_in.bias[:10] = 0
        v.ffn_out.weight[:, :10] = 0
    x = torch.randint(0, 50, (3, 7))
    before = model(input_ids=x).logits
    assert strip_zero_structures(model) == 11
    after = model(input_ids=x).logits
    views = layer_views(model)
    assert (views[0].num_heads, views[0].ffn_width) == (3, 54)
    assert (views[1].num_heads, views[1].ffn_width) == (4, 64)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


def test_waterfall_steps_are_differences_of_the_rows() -> None:
    from bench.waterfall import waterfall_markdown, waterfall_steps

    names_acc = [
        ("reference teacher (all labels), fp32", 0.85),
        ("SEC job's own teacher (label budget), fp32", 0.845),
        ("layer-dropped student (KD), fp32", 0.835),
        ("+ head/FFN pruning, fp32", 0.834),
        ("+ vocabulary pruning, fp32", 0.834),
        ("naive pipeline: + ONNX Runtime int8 PTQ", 0.826),
        ("+ QAT int8 instead of PTQ", 0.831),
        ("SEC (TAL, ADA, adaptive controller, QAT)", 0.84),
    ]
    rows = [Row(name, "waterfall", "waterfall", accuracy=acc) for name, acc in names_acc]
    steps = {s["step"]: s["points"] for s in waterfall_steps(rows)}
    assert steps["label budget (teacher)"] == -0.5
    assert steps["layers (KD)"] == -1.5
    assert steps["int8, PTQ (naive pipeline)"] == -0.8
    assert steps["int8, QAT instead of PTQ"] == 0.5
    assert steps["total: SEC vs the reference teacher"] == -1.0
    assert steps["SEC vs the naive pipeline"] == 1.4
    md = "\n".join(
        waterfall_markdown({"rows": [r.to_dict() for r in rows], "steps": waterfall_steps(rows)})
    )
    assert "| SEC vs the naive pipeline | +1.40 |" in md


def test_a_second_seeds_waterfall_has_its_own_file_and_report_section(tmp_path: Path) -> None:
    from bench.suite import FULL, QUICK, Context
    from bench.waterfall import waterfall_steps

    def ctx(variant: str, mode: object) -> Context:
        return Context(None, None, None, mode, tmp_path, "c", tmp_path, variant)  # type: ignore[arg-type]

    from bench.common import DEFAULT_SPEC, ROOT, spec_variant

    assert spec_variant(DEFAULT_SPEC) == ""
    assert spec_variant(ROOT / "bench" / "specs" / "minilm_rt_seed1.yaml") == "minilm_rt_seed1"
    assert ctx("", FULL).results_path("waterfall").name == "waterfall.json"
    assert ctx("", QUICK).results_path("waterfall").name == "waterfall.quick.json"
    seed1 = ctx("minilm_rt_seed1", FULL).results_path("waterfall")
    assert seed1.name == "waterfall.minilm_rt_seed1.json"

    results = tmp_path / "results"
    results.mkdir()
    for seed, naive, sec in ((0, 0.83, 0.82), (1, 0.80, 0.815)):
        rows = [
            Row(
                "naive pipeline: + ONNX Runtime int8 PTQ", "waterfall", "waterfall", accuracy=naive
            ),
            Row("SEC (TAL, ADA, adaptive controller, QAT)", "waterfall", "waterfall", accuracy=sec),
        ]
        body = _section("waterfall", rows, mode="full")
        body.update(seed=seed, steps=waterfall_steps(rows))
        name = "waterfall.json" if seed == 0 else "waterfall.minilm_rt_seed1.json"
        (results / name).write_text(json.dumps(body))
    (results / "waterfall.minilm_rt_seed1.quick.json").write_text("not read")

    text = write_report(results, tmp_path / "RESULTS.md")

    assert "### The same waterfall on `waterfall.minilm_rt_seed1.json` (seed 1)" in text
    assert "| SEC vs the naive pipeline | -1.00 |" in text
    assert "| SEC vs the naive pipeline | +1.50 |" in text


def test_budget_reports_state_the_targets(tmp_path: Path) -> None:
    from bench.budget import (
        curve_markdown,
        half_point_budgets,
        load_markdown,
        merge_points,
        plot_curve,
    )

    def point(minutes: float, drop: float) -> dict[str, object]:
        return {
            "budget_minutes": minutes,
            "plan": {
                "teacher_epochs": 1.0,
                "student_epochs": 2.0,
                "teacher_steps": 300,
                "student_steps": 600,
            },
            "predicted_minutes": minutes * 0.8,
            "fits": True,
            "wall_minutes": minutes * 0.9,
            "accuracy": 0.85 - drop / 100,
            "job_teacher_accuracy": 0.845,
            "drop_points": drop,
            "size_ratio": 9.5,
            "speed_ratio": 6.0,
        }

    machine = {"cpu": "test cpu"}
    curve = {
        "command": "python -m bench.budget curve",
        "machine": machine,
        "reference": {"accuracy": 0.85},
        "points": [point(15, 2.0), point(30, 0.9), point(60, 0.4)],
        "budget_for_half_point": 60.0,
    }
    text = curve_markdown(curve)
    assert "| 30 | 1.00 / 2.00 | 300 / 600 |" in text
    assert "first reached at: 60 min." in text
    assert "Not yet run: 120 min." in text
    # The largest budget's drop split into the waterfall's two halves (reference 0.85,
    # job's teacher 0.845, drop 0.4): 0.50 before compression, -0.10 after.
    assert "Where the 60-min job's 0.40 points go: its teacher" in text
    assert "ends 0.50 under the reference" in text
    assert "costs -0.10." in text
    assert "no longer binds" not in text  # 1 / 2 epochs: less than the curve asks for
    # A curve built over sittings: a later run adds its budget and replaces a rerun one.
    merged = merge_points(curve["points"], [point(120, 0.3), point(15, 1.5)])
    assert [(p["budget_minutes"], p["drop_points"]) for p in merged] == [
        (15, 1.5),
        (30, 0.9),
        (60, 0.4),
        (120, 0.3),
    ]
    text = curve_markdown({**curve, "points": merged[:2], "budget_for_half_point": None})
    assert "not reached at any budget run so far (15, 30 min). Not yet run: 60, 120" in text
    assert "different CPUs" not in text
    assert "too small" not in text
    overrun = {**point(15, 3.6), "fits": False, "wall_minutes": 21.5}
    text = curve_markdown({**curve, "points": [overrun]})
    assert "At 15 min the budget is too small for a useful plan" in text
    assert "took 21.5 min" in text
    # A job that shipped another runtime than the int8 ONNX file says so by its size.
    torch_run = {**point(30, 3.7), "size_ratio": 1.76, "runtime": "torch-int8"}
    assert "| 1.76 (torch-int8) |" in curve_markdown({**curve, "points": [torch_run]})
    # A budget past the whole of the curve's epochs buys nothing more, and the table says so.
    plan = {
        "teacher_epochs": 3.0,
        "student_epochs": 12.0,
        "teacher_steps": 900,
        "student_steps": 3600,
    }
    saturated = {**point(120, 0.6), "plan": plan}
    text = curve_markdown({**curve, "points": [*curve["points"], saturated]})
    assert "At 120 min the budget no longer binds: the plan runs all 3 / 12 epochs" in text
    # Another CPU's points make their own curve: same budget, different steps.
    elsewhere = {**point(15, 0.3), "machine": "Intel Xeon (avx2 avx512f amx_int8)"}
    both = merge_points(curve["points"], [elsewhere])
    assert len(both) == 4
    text = curve_markdown({**curve, "points": both})
    assert "One curve per CPU" in text
    assert text.index("## Intel Xeon (avx2 avx512f amx_int8)") < text.index("## unknown CPU")
    assert "first reached at: 15 min." in text
    assert "first reached at: 60 min." in text
    assert half_point_budgets(both) == {
        "Intel Xeon (avx2 avx512f amx_int8)": 15,
        "unknown CPU": 60.0,
    }
    plot_curve({**curve, "points": both}, tmp_path / "two_cpus.png")
    assert (tmp_path / "two_cpus.png").stat().st_size > 0
    plot_curve(curve, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0

    def run(drop: float, load_mean: float) -> dict[str, object]:
        return {
            **point(30, drop),
            "load_average_1m": {"mean": load_mean, "max": load_mean + 0.5},
        }

    load = {
        "command": "python -m bench.budget load",
        "machine": machine,
        "reference": {"accuracy": 0.85},
        "quiet": run(0.8, 1.9),
        "busy": run(0.9, 4.1),
        "same_plan": True,
        "accuracy_difference_points": 0.1,
        "within_tolerance": True,
    }
    text = load_markdown(load)
    assert "Same plan: yes" in text
    assert ": met." in text
    assert "| busy | 4.1 (4.6) | 300 / 600 |" in text
    assert "| 0.90 |" in text
    # Without the all-label reference (--no-reference) the drops are dashes, not a crash.
    text = load_markdown({**load, "reference": None})
    assert "not trained." in text
    assert "| - |" in text


def test_too_small_report_names_the_budget_a_base_size_model_needs() -> None:
    from bench.too_small import markdown

    throughput = {"teacher_step_s": 31.5, "student_step_s": 6.2, "calibration_s": 410.0}

    def run(minutes: float, fits: bool, warnings: list[str]) -> dict[str, object]:
        return {
            "budget_minutes": minutes,
            "fits": fits,
            "teacher_steps": 400 if fits else 90,
            "student_steps": 1200 if fits else 30,
            "predicted_minutes": minutes * 0.9 if fits else 200.0,
            "minimum_minutes": 181.2,
            "full_minutes": 402.7,
            "warnings": warnings,
            "throughput": throughput,
        }

    too_small = "budget too small: 30 min; a useful plan needs about 182 min on this device"
    dry = {
        "command": "python -m bench.too_small --budget 30",
        "machine": {"cpu": "test cpu"},
        "load_average_1m": {"mean": 2.0, "max": 2.2},
        "model": "BERT-base shape",
        "parameters": 109_483_778,
        "spec": "bench/specs/minilm_rt_pairs.yaml",
        "runs": [run(30, False, [too_small]), run(182, True, []), run(403, True, [])],
    }
    text = markdown(dry)
    assert "109.5M parameters" in text
    assert "teacher 31.50, student 6.20" in text
    assert f"| 30 | **no** | 90 / 30 | 200.0 | 181.2 / 402.7 | {too_small} |" in text
    assert "| 182 | yes | 400 / 1200 |" in text
    assert "The job at the budget" not in text

    def job(teacher_accuracy: float) -> dict[str, object]:
        return {
            "budget_minutes": 182.0,
            "plan": {"teacher_steps": 400, "student_steps": 1200, "fits": True},
            "predicted_minutes": 160.0,
            "wall_minutes": 170.5,
            "test_majority_baseline": 0.51,
            "teacher_events": ["teacher fine-tuned for 400 steps on 3570 labels"],
            "student_event": "training the student for 1200 steps",
            "teacher_test_accuracy": teacher_accuracy,
            "compressed_test_accuracy": 0.84,
            "size_ratio": 9.1,
            "speed_ratio": 4.2,
            "warnings": [],
            "load_average_1m": {"mean": 1.9, "max": 2.1},
        }

    text = markdown({**dry, "run": job(0.86)})
    assert "## The job at the budget the dry run named (182 min)" in text
    assert "| 400 / 1200 | 160.0 / 170.5 | 0.8600 | 0.5100 | 0.8400 |" in text
    assert "The teacher beats the majority class by +35.00 points" in text
    assert "training the student for 1200 steps" in text
    assert "does NOT beat the majority class by -1.00" in markdown({**dry, "run": job(0.50)})
