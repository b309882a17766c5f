"""Config section -> stage: the one map that says which stage runs which technique, and when.

A technique is registered by one line of `TECHNIQUES`: the name of its section under
`techniques` in the job spec (`sec_engine.spec.Techniques`), where its stage class lives,
its phase and its order within the phase. The pipeline runs the enabled stages' hooks in
(phase, order): data techniques make the rows the student trains on before the model
techniques build and compress the student, and export techniques change what is written last.
The stage is named as "module:Class" and imported only when its section is enabled, so a
disabled technique's code is never loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sec_engine.spec import JobSpec
from sec_engine.stages.base import Stage


class StagePhase(IntEnum):
    DATA = 1  # makes training rows (augmented, pseudo-labelled) and may own the teacher
    MODEL = 2  # builds, trains under the controller, or compresses the student
    EXPORT = 3  # changes the exported artifact (e.g. the ONNX graph before quantization)


@dataclass(frozen=True)
class Registration:
    stage: str  # "module:Class", imported only when the technique is enabled
    phase: StagePhase
    order: int  # position within the phase, lowest first


TECHNIQUES: dict[str, Registration] = {
    "tal": Registration("sec_engine.stages.tal:TalStage", StagePhase.DATA, 10),
    "ada": Registration("sec_engine.stages.ada:AdaStage", StagePhase.DATA, 20),
    "sqd": Registration("sec_engine.stages.sqd:SqdStage", StagePhase.MODEL, 10),
    "aip": Registration("sec_engine.stages.aip:AipStage", StagePhase.MODEL, 20),
    "int4": Registration("sec_engine.stages.int4:Int4Stage", StagePhase.EXPORT, 10),
}


def stage_class(registration: Registration) -> Callable[[Any], Stage]:
    """The stage class (built from its config section), imported now."""
    module, _, name = registration.stage.partition(":")
    cls: Callable[[Any], Stage] = getattr(importlib.import_module(module), name)
    return cls


def build_stages(spec: JobSpec) -> list[Stage]:
    """The enabled stages, in (phase, order)."""
    enabled: list[tuple[Registration, Any]] = []
    for section, registration in TECHNIQUES.items():
        config = getattr(spec.techniques, section)
        if config.enabled:
            enabled.append((registration, config))
    enabled.sort(key=lambda pair: (pair[0].phase, pair[0].order))
    return [stage_class(registration)(config) for registration, config in enabled]
