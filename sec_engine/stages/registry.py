"""Config section -> stage class: the one place that knows which stage runs which technique."""

from __future__ import annotations

from sec_engine.spec import JobSpec
from sec_engine.stages.base import Stage


def build_stages(spec: JobSpec) -> list[Stage]:
    """The enabled stages in lifecycle order: data techniques first, then compression.

    Imports are per stage so a spec with a technique off never loads its code.
    """
    t = spec.techniques
    stages: list[Stage] = []
    if t.tal.enabled:
        from sec_engine.stages.tal import TalStage

        stages.append(TalStage(t.tal))
    if t.ada.enabled:
        from sec_engine.stages.ada import AdaStage

        stages.append(AdaStage(t.ada))
    if t.sqd.enabled:
        from sec_engine.stages.sqd import SqdStage

        stages.append(SqdStage(t.sqd))
    if t.aip.enabled:
        from sec_engine.stages.aip import AipStage

        stages.append(AipStage(t.aip))
    return stages
