"""The reporter's job-wide trace steps: unique and increasing across phases."""

from __future__ import annotations

from pathlib import Path

import pytest

from sec_engine.callbacks import Phase, TraceRow
from sec_engine.reporting import Reporter
from tests.doubles import RecordingCallbacks

pytestmark = pytest.mark.unit


def _row(step: int, phase: Phase) -> TraceRow:
    return TraceRow(step=step, phase=phase, lambda1=0.5, lambda2=0.5)


def test_steps_restart_per_phase_but_stay_unique_job_wide(tmp_path: Path) -> None:
    callbacks = RecordingCallbacks()
    reporter = Reporter(callbacks, tmp_path)
    reporter.enter(Phase.TEACHER)
    for r in range(3):  # TAL rounds 0, 1, 2
        reporter.trace(_row(r, Phase.TEACHER))
    reporter.enter(Phase.COMPRESSING)
    for s in (0, 50, 100):  # compression steps restart at 0
        reporter.trace(_row(s, Phase.COMPRESSING))

    steps = [row.step for row in callbacks.rows]
    assert steps == [0, 1, 2, 3, 53, 103]
    assert [row.observation["phase_step"] for row in callbacks.rows] == [0, 1, 2, 0, 50, 100]
    written = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(written) == 6


def test_a_stage_repeating_a_step_still_gets_a_new_one(tmp_path: Path) -> None:
    callbacks = RecordingCallbacks()
    reporter = Reporter(callbacks, tmp_path)
    reporter.enter(Phase.COMPRESSING)
    reporter.trace(_row(10, Phase.COMPRESSING))
    reporter.trace(_row(10, Phase.COMPRESSING))
    assert [row.step for row in callbacks.rows] == [10, 11]
