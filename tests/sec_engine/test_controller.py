"""The Synergy Controller policy, driven by scripted observations."""

from __future__ import annotations

import pytest

from sec_engine.controller.policy import Decision, Observation, decide, initial_decision

pytestmark = pytest.mark.unit


def _obs(**kw) -> Observation:
    base = {
        "step": 100,
        "val_accuracy": 0.90,
        "teacher_accuracy": 0.90,
        "threshold": 0.01,
        "lambda1": 0.5,
        "lambda2": 0.5,
        "data_share": 0.5,
        "size_mb": 20.0,
        "size_target_mb": 10.0,
    }
    base.update(kw)
    return Observation(**base)


def test_accuracy_drop_over_threshold_lowers_lambda2_and_backs_off_pruning() -> None:
    d = decide(_obs(val_accuracy=0.85), adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "over_threshold"
    assert d.lambda2 < 0.5
    assert d.compression_pressure == 0.0
    assert d.restore_best
    assert d.lambda1 > 0.5  # more data signal to recover
    assert d.data_share > 0.5


def test_slack_with_size_target_unmet_raises_lambda2_and_prunes() -> None:
    d = decide(_obs(val_accuracy=0.899), adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "slack_size_unmet"
    assert d.lambda2 > 0.5
    assert d.compression_pressure >= 1.0
    assert not d.restore_best


def test_large_slack_prunes_faster_than_small_slack() -> None:
    small = decide(_obs(val_accuracy=0.8945), adaptive=True, initial=(0.5, 0.5))
    large = decide(_obs(val_accuracy=0.90), adaptive=True, initial=(0.5, 0.5))
    assert large.compression_pressure > small.compression_pressure


def test_targets_met_holds_and_stops_pruning() -> None:
    d = decide(_obs(size_mb=9.0, sparsity_progress=1.0), adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "targets_met"
    assert d.compression_pressure == 0.0  # hold: no pruning step
    assert not d.restore_best
    assert (d.lambda1, d.lambda2) == (0.5, 0.5)


def test_without_size_target_pruning_progress_is_the_gap() -> None:
    unmet = decide(
        _obs(size_mb=None, size_target_mb=None, sparsity_progress=0.4),
        adaptive=True,
        initial=(0.5, 0.5),
    )
    met = decide(
        _obs(size_mb=None, size_target_mb=None, sparsity_progress=1.0),
        adaptive=True,
        initial=(0.5, 0.5),
    )
    assert unmet.rule == "slack_size_unmet"
    assert met.rule == "targets_met"


def test_size_met_early_does_not_stop_unfinished_pruning() -> None:
    d = decide(_obs(size_mb=9.0, sparsity_progress=0.3), adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "slack_size_unmet"
    assert d.compression_pressure > 0


def test_time_spent_stops_training() -> None:
    assert decide(_obs(time_used=1.0), adaptive=True, initial=(0.5, 0.5)).stop_training
    assert not decide(_obs(time_used=0.5), adaptive=True, initial=(0.5, 0.5)).stop_training


def test_non_adaptive_keeps_lambdas_fixed_but_pruning_still_reacts() -> None:
    over = decide(_obs(val_accuracy=0.8, lambda2=0.5), adaptive=False, initial=(0.5, 0.5))
    slack = decide(_obs(), adaptive=False, initial=(0.5, 0.5))
    assert (over.lambda1, over.lambda2) == (0.5, 0.5) == (slack.lambda1, slack.lambda2)
    assert over.restore_best
    assert slack.compression_pressure > 0


def test_scripted_sequence_is_deterministic_and_bounded() -> None:
    def run() -> list[Decision]:
        out = []
        d = initial_decision(0.5, 0.5)
        for acc in [0.9, 0.9, 0.88, 0.895, 0.899, 0.85, 0.85, 0.85, 0.85, 0.85]:
            d = decide(
                _obs(
                    val_accuracy=acc, lambda1=d.lambda1, lambda2=d.lambda2, data_share=d.data_share
                ),
                adaptive=True,
                initial=(0.5, 0.5),
            )
            out.append(d)
        return out

    first, second = run(), run()
    assert first == second
    assert all(0.01 <= d.lambda2 <= 10 and 0.1 <= d.data_share <= 0.9 for d in first)
    assert first[1].lambda2 > first[0].lambda2 > 0.5  # two slack steps push λ2 up
    assert first[2].lambda2 < first[1].lambda2  # the drop over T pulls it back


def test_exhausted_data_budget_decays_lambda1_once_the_student_caught_up() -> None:
    fresh = decide(_obs(data_budget_used=0.2), adaptive=True, initial=(0.5, 0.5))
    spent = decide(_obs(data_budget_used=1.0), adaptive=True, initial=(0.5, 0.5))
    assert spent.lambda1 < fresh.lambda1


def test_lambda1_holds_while_the_student_trails_the_teacher() -> None:
    # Within T of its own best, size unmet, data budget spent, but 0.5 points under the
    # teacher: λ2 pushes compression, while the data term keeps its weight.
    obs = _obs(val_accuracy=0.895, best_accuracy=0.895, data_budget_used=1.0)
    d = decide(obs, adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "slack_size_unmet"
    assert d.lambda2 > 0.5
    assert d.lambda1 == pytest.approx(0.5)
    caught_up = decide(
        _obs(val_accuracy=0.90, data_budget_used=1.0), adaptive=True, initial=(0.5, 0.5)
    )
    assert caught_up.lambda1 < 0.5


def test_data_share_holds_while_the_student_trails_the_teacher() -> None:
    trailing = decide(
        _obs(val_accuracy=0.895, best_accuracy=0.895), adaptive=True, initial=(0.5, 0.5)
    )
    assert trailing.rule == "slack_size_unmet"
    assert trailing.data_share == pytest.approx(0.5)
    caught_up = decide(_obs(val_accuracy=0.90), adaptive=True, initial=(0.5, 0.5))
    assert caught_up.data_share < 0.5


def test_student_below_teacher_but_at_its_best_still_prunes() -> None:
    # A distilled student 4 points under the teacher, at its best so far: the gap is the
    # layer drop's, not pruning's, so pruning goes on.
    d = decide(_obs(val_accuracy=0.86, best_accuracy=0.86), adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "slack_size_unmet"
    assert d.compression_pressure > 0
    assert not d.restore_best


def test_drop_from_students_best_over_threshold_backs_off() -> None:
    obs = _obs(val_accuracy=0.84, best_accuracy=0.86)
    assert obs.reference_accuracy == pytest.approx(0.86)
    assert obs.teacher_drop == pytest.approx(0.06)
    d = decide(obs, adaptive=True, initial=(0.5, 0.5))
    assert d.rule == "over_threshold"
    assert d.lambda2 < 0.5
    assert d.restore_best


def test_reference_never_exceeds_the_teacher() -> None:
    obs = _obs(val_accuracy=0.885, best_accuracy=0.93)
    assert obs.reference_accuracy == pytest.approx(0.90)
    assert decide(obs, adaptive=True, initial=(0.5, 0.5)).rule == "over_threshold"
