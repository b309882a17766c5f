"""Job specs for the suite's rows: the user's spec with techniques switched on and off.

Every row is an ordinary `JobSpec` run by `sec_engine.pipeline.run_job`, so an ablation is
exactly a spec a user could submit (docs/DESIGN_NOTES.md, choices).
"""

from __future__ import annotations

from typing import Any

from sec_engine.spec import JobSpec, Techniques

TECHNIQUES = tuple(Techniques.model_fields)  # every technique section of the spec


def variant(
    spec: JobSpec,
    *,
    on: dict[str, dict[str, Any]] | None = None,
    label_budget: float = 1.0,
    training: dict[str, Any] | None = None,
    adaptive: bool | None = None,
) -> JobSpec:
    """`spec` with only the techniques in `on` enabled (each with its config overrides)."""
    on = on or {}
    unknown = set(on) - set(TECHNIQUES)
    if unknown:
        raise ValueError(f"unknown techniques {sorted(unknown)}")
    techniques = spec.techniques.model_copy(
        update={
            name: getattr(spec.techniques, name).model_copy(
                update={"enabled": name in on, **on.get(name, {})}
            )
            for name in TECHNIQUES
        }
    )
    update: dict[str, Any] = {
        "techniques": techniques,
        "budget": spec.budget.model_copy(update={"label_budget": label_budget}),
    }
    if training:
        update["training"] = spec.training.model_copy(update=training)
    if adaptive is not None:
        update["controller"] = spec.controller.model_copy(update={"adaptive": adaptive})
    # model_copy skips validation; round-trip so an incoherent variant fails here, loudly.
    return JobSpec.model_validate(spec.model_copy(update=update).model_dump())


def from_teacher(spec: JobSpec, teacher_dir: str) -> JobSpec:
    """Compress an already fine-tuned teacher (teacher_epochs 0: the base is the teacher)."""
    training = spec.training.model_copy(update={"teacher_epochs": 0.0})
    return spec.model_copy(update={"base_model": teacher_dir, "training": training})
