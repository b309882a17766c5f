"""The engine as a recipe: the technique map, and the loop's keep-best against the controller."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sec_engine.controller.policy import Observation
from sec_engine.spec import JobSpec, Techniques
from sec_engine.stages.base import Stage
from sec_engine.stages.compress import KeepBest
from sec_engine.stages.registry import TECHNIQUES, build_stages, stage_class

pytestmark = pytest.mark.unit


def _spec(**techniques: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate({"dataset": "x", "techniques": techniques})


def test_every_technique_section_is_registered_once() -> None:
    assert set(TECHNIQUES) == set(Techniques.model_fields)
    for section, registration in TECHNIQUES.items():
        cls = stage_class(registration)
        assert isinstance(cls, type)
        assert issubclass(cls, Stage)
        assert cls.name == section  # the manifest reports a technique under its section's name


def test_stages_run_by_phase_then_order() -> None:
    assert [s.name for s in build_stages(_spec())] == ["tal", "ada", "sqd", "aip"]
    ranks = [(r.phase, r.order) for r in TECHNIQUES.values()]
    assert len(set(ranks)) == len(ranks), "two techniques may not share a place in the order"


def test_disabled_techniques_build_no_stage() -> None:
    off = {name: {"enabled": False} for name in Techniques.model_fields}
    assert build_stages(_spec(**off)) == []
    only_aip = {**off, "aip": {"enabled": True}}
    assert [s.name for s in build_stages(_spec(**only_aip))] == ["aip"]


@pytest.mark.parametrize("teacher", [0.80, 0.85])
def test_keep_best_judges_as_the_controller_observes(teacher: float) -> None:
    """The loop's keep-best and the controller's "within T" are the same test, evaluation by
    evaluation, whatever the history of accuracies (the reference moves with the best)."""
    threshold = 0.02
    accuracies = [0.70, 0.84, 0.83, 0.81, 0.86, 0.845, 0.8, 0.86]
    for history in itertools.permutations(accuracies, 5):
        keep = KeepBest(nn.Linear(1, 1), teacher, threshold)
        for step, acc in enumerate(history, start=1):
            obs = Observation(
                step=step,
                val_accuracy=acc,
                teacher_accuracy=teacher,
                threshold=threshold,
                lambda1=0.5,
                lambda2=0.5,
                data_share=0.5,
                best_accuracy=max(keep.best_accuracy, acc),
            )
            before = keep.good
            keep.judge(step, acc)
            within = keep.good is not before
            assert within == (obs.accuracy_drop <= obs.threshold), (history, step)


def test_keep_best_restores_the_last_state_within_threshold() -> None:
    model = nn.Linear(1, 1, bias=False)
    keep = KeepBest(model, teacher_accuracy=0.9, threshold=0.01)
    for step, (weight, acc) in enumerate([(1.0, 0.85), (2.0, 0.86), (3.0, 0.80)], start=1):
        with torch.no_grad():
            model.weight.fill_(weight)
        keep.judge(step, acc)
    events: list[tuple[str, dict[str, object]]] = []
    reporter = SimpleNamespace(event=lambda kind, message, data: events.append((kind, data)))
    keep.restore(SimpleNamespace(reporter=reporter))  # type: ignore[arg-type]
    assert model.weight.item() == 2.0  # step 2: within T of the best so far; step 3 is not
    assert events == [
        ("compression.kept", {"kept": "within_threshold", "step": 2, "best_accuracy": 0.86})
    ]
