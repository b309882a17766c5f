"""The job's plan from a scripted device: what fits, what shrinks, what is too small.

The pipeline tests at the bottom run real tiny jobs with a scripted slow or fast device
(`run_job(..., throughput=...)`), so the logic is checked without timing anything.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sec_engine import planning
from sec_engine.data.splits import Example
from sec_engine.pipeline import _check_teacher, dry_run, majority_baseline, run_job
from sec_engine.planning import Sizes, Throughput, make_plan, planned_spec
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec
from sec_engine.stages import ada, tal
from tests.doubles import RecordingCallbacks

pytestmark = pytest.mark.unit

SIZES = Sizes(train=10_000, validation=1_000, test=1_000, unlabelled=1_000)
OFF = {"enabled": False}


def device(scale: float) -> Throughput:
    """A scripted device: `scale` times the speed figures of the 2-core build machine."""
    return Throughput(
        teacher_step_s=0.5 * scale,
        teacher_infer_row_s=0.005 * scale,
        student_step_s=0.5 * scale,
        student_infer_row_s=0.0025 * scale,
    )


def spec(minutes: float = 30.0, **over: Any) -> JobSpec:
    base: dict[str, Any] = {
        "dataset": "d.csv",
        "budget": {"max_minutes": minutes, "label_budget": 0.7},
        "training": {"teacher_epochs": 1.5, "student_epochs": 3.0},
    }
    base.update(over)
    return JobSpec.model_validate(base)


def test_constants_match_the_stages_they_predict() -> None:
    assert planning.TAL_EARLY_ROUND_EPOCHS == tal.EARLY_ROUND_EPOCHS
    assert planning.ADA_INITIAL_ROWS == ada.INITIAL_ROWS
    assert planning.MAX_SCORED == tal.MAX_PSEUDO_SCORED


def test_a_budget_that_fits_runs_the_spec_as_written() -> None:
    s = spec(60)
    plan = make_plan(s, SIZES, device(1.0))
    assert (plan.teacher_epochs, plan.student_epochs, plan.scale) == (1.5, 3.0, 1.0)
    assert plan.fits
    assert not plan.notes
    assert plan.predicted_minutes <= 60 * planning.PLAN_MARGIN
    assert planned_spec(s, plan) is s
    assert plan.teacher_steps > 0
    assert plan.student_steps > 0


def test_a_tight_budget_shrinks_both_phases_towards_the_minimum() -> None:
    full = make_plan(spec(600), SIZES, device(1.0))
    s = spec(full.predicted_minutes * 0.85)
    plan = make_plan(s, SIZES, device(1.0))
    assert plan.fits
    assert 0.0 < plan.scale < 1.0
    assert 1.0 <= plan.teacher_epochs < 1.5
    assert 1.0 <= plan.student_epochs < 3.0
    assert plan.predicted_minutes <= s.budget.max_minutes * planning.PLAN_MARGIN + 1e-6
    assert "to fit" in plan.notes[0]
    run = planned_spec(s, plan)
    assert run.training.teacher_epochs == plan.teacher_epochs
    assert run.budget == s.budget  # the user's budget is untouched


def test_a_budget_too_small_says_so_and_names_the_budget_it_needs() -> None:
    s = spec(30)
    plan = make_plan(s, SIZES, device(20.0))  # a base-size model on this CPU, say
    assert not plan.fits
    assert plan.minimum_minutes > 30
    assert plan.full_minutes > plan.minimum_minutes
    assert (plan.teacher_epochs, plan.student_epochs) == (1.0, 1.0)
    assert "too small" in plan.notes[0]
    # and with the budget it asked for, the minimum plan fits
    assert make_plan(spec(plan.minimum_minutes + 1), SIZES, device(20.0)).fits


def test_the_plan_depends_on_the_device_not_the_clock() -> None:
    a = make_plan(spec(20), SIZES, device(1.5))
    b = make_plan(spec(20), SIZES, device(1.5))
    assert a == b


def test_a_shrunk_plan_lies_on_the_grid_so_calibration_noise_keeps_its_steps() -> None:
    # a budget that the plan halfway between grid lines 0.4 and 0.5 fills exactly
    seconds, _, _ = planning.predict(spec(), SIZES, device(1.0), 1.0 + 0.45 * 0.5, 1.0 + 0.45 * 2)
    s = spec(sum(seconds.values()) / 60 / planning.PLAN_MARGIN)
    plans = [make_plan(s, SIZES, device(f)) for f in (0.99, 1.0, 1.01)]
    scales = {round(p.scale / planning.PLAN_GRID, 6) for p in plans}
    assert all(x == int(x) for x in scales), scales  # every scale is a multiple of the grid
    assert len({(p.teacher_steps, p.student_steps) for p in plans}) == 1
    assert plans[1].predicted_minutes <= s.budget.max_minutes * planning.PLAN_MARGIN


def test_spec_epochs_below_one_are_their_own_minimum() -> None:
    s = spec(600, training={"teacher_epochs": 0.5, "student_epochs": 0.5})
    plan = make_plan(s, SIZES, device(1.0))
    assert (plan.teacher_epochs, plan.student_epochs) == (0.5, 0.5)


def test_hard_cap_defaults_to_twice_the_budget_and_never_below_it() -> None:
    assert spec(30).budget.wall_cap_seconds == 3600
    capped = JobSpec.model_validate(
        {"dataset": "d", "budget": {"max_minutes": 30, "hard_cap_minutes": 31}}
    )
    assert capped.budget.wall_cap_seconds == 31 * 60
    with pytest.raises(ValueError, match="hard_cap_minutes"):
        JobSpec.model_validate(
            {"dataset": "d", "budget": {"max_minutes": 30, "hard_cap_minutes": 5}}
        )


def test_weak_teacher_is_a_loud_warning() -> None:
    cb = RecordingCallbacks()
    state = SimpleNamespace(
        data=SimpleNamespace(validation=[Example("x", None, 0)] * 7 + [Example("y", None, 1)] * 3),
        teacher_val_accuracy=0.7,  # exactly the majority class
        reporter=SimpleNamespace(event=cb.event),
    )
    [warning] = _check_teacher(state)  # type: ignore[arg-type]
    assert "the teacher did not learn" in warning
    assert cb.events[0][0] == "teacher.weak"
    assert cb.events[0][2]["majority_baseline"] == pytest.approx(0.7)
    state.teacher_val_accuracy = 0.9
    assert _check_teacher(state) == []  # type: ignore[arg-type]


def _tiny_spec(data: Path, minutes: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "unused",
            "dataset": str(data),
            "budget": {"max_minutes": minutes},
            "training": {
                "batch_size": 16,
                "max_seq_len": 32,
                "teacher_epochs": 3,
                "student_epochs": 2,
                "eval_every_steps": 10,
                "learning_rate": 1e-3,
            },
            "targets": {"latency_batch_size": 4, "latency_seq_len": 16},
            "techniques": {"ada": OFF, "tal": OFF, "aip": OFF, "sqd": {"student_layers": 1}},
        }
    )


def test_a_slow_device_is_reported_first_and_in_the_manifest(
    tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    inputs = ResolvedInputs(model=str(tiny_bert_dir), train_path=sentiment_csv)
    slow = device(500.0)  # every step takes minutes: nothing useful fits in one
    s = _tiny_spec(sentiment_csv, 1.0)
    preview = dry_run(s, inputs, throughput=slow)
    assert not preview["fits"]
    assert preview["minimum_minutes"] > 1.0

    cb = RecordingCallbacks()
    result = run_job(s, inputs, tmp_path / "out", cb, throughput=slow)
    kinds = [k for k, _, _ in cb.events]
    assert kinds.index("plan") < kinds.index("budget.too_small") < kinds.index("teacher.done")
    too_small = next(d for k, _, d in cb.events if k == "budget.too_small")
    assert too_small["minimum_minutes"] == pytest.approx(preview["minimum_minutes"], rel=0.2)
    manifest = result.manifest
    assert manifest["plan"]["fits"] is False
    assert any("budget too small" in w for w in manifest["warnings"])
    phases = {"teacher", "data", "compressing", "evaluating_exporting"}
    assert set(manifest["plan"]["actual_seconds"]) == phases
    assert set(manifest["plan"]["actual_device_seconds"]) == phases


def test_with_the_budget_it_needs_the_plan_fits_and_the_student_trains(
    tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    inputs = ResolvedInputs(model=str(tiny_bert_dir), train_path=sentiment_csv)
    slow = device(500.0)
    needed = dry_run(_tiny_spec(sentiment_csv, 1.0), inputs, throughput=slow)["minimum_minutes"]
    s = _tiny_spec(sentiment_csv, needed + 1)
    cb = RecordingCallbacks()
    result = run_job(s, inputs, tmp_path / "out", cb, throughput=slow)
    kinds = [k for k, _, _ in cb.events]
    assert "budget.too_small" not in kinds
    assert result.manifest["plan"]["fits"] is True
    start = next(d for k, _, d in cb.events if k == "compression.start")
    assert start["steps"] == result.manifest["plan"]["student_steps"] > 0
    assert "deadline.reached" not in kinds  # the tiny job runs far faster than scripted


def test_majority_baseline() -> None:
    assert majority_baseline([0, 0, 1, None]) == pytest.approx(2 / 3)
    assert majority_baseline([None]) is None


def test_a_job_without_soft_labelled_rows_pays_for_no_soft_batches() -> None:
    """With ADA and TAL off the loop's pool is empty: the plan must not price soft batches
    (it did, and a distillation-only job planned 0.8 of its epochs where all fitted)."""
    tp = Throughput(
        teacher_step_s=0.5,
        teacher_infer_row_s=0.005,
        student_step_s=0.3,
        student_infer_row_s=0.0025,
        soft_batch_s=3.0,
    )
    s = spec(600, budget={"max_minutes": 600}, techniques={"ada": OFF, "tal": OFF})
    plan = make_plan(s, SIZES, tp)
    labelled_only = plan.student_steps * tp.student_step_s * planning.LOOP_OVERHEAD
    compressing = plan.predicted_seconds["compressing"]
    assert labelled_only <= compressing < labelled_only + plan.student_steps * tp.soft_batch * 0.1
