"""`run_job`: one job spec, run to completion (the engine's public entry point).

Phases, in order (each reported through the callbacks):

- preparing   read and split the data, load the base model safely, build the enabled stages;
- teacher     fine-tune the base (TAL owns this when enabled, to spend the label budget);
- data        ADA augments, TAL pseudo-labels (both with the teacher's soft labels);
- compressing the student (SQD) is trained under the Synergy Controller while AIP prunes;
- evaluating  / exporting: teacher and compressed model measured side by side on the held-out
              test split, the artifact written, manifest.json last (with every file's sha256).

Time: after preparing, a short calibration measures what a step costs on this device and the
job plans its steps (sec_engine.planning) to fit `budget.max_minutes`; the plan is an event
(`plan`) and part of the manifest, with the predicted and the actual minutes per phase. The
phases then train their planned steps, whatever the load. The wall clock is a hard cap
(`budget.hard_cap_minutes`): each phase may use its planned share of what is left of it, a
reserve is kept for measuring and exporting, and a phase cut short keeps its best state and
says so (`deadline.reached`), so the job always ends with a model. A dry run (`dry_run`, and
`dry_run_job` for the service's `dry_run: true` jobs) stops after the plan: the same
preparing, calibration and `plan` event, no training and no artifact.

Loud warnings, never a silent success: a budget too small for a useful plan
(`budget.too_small`, with the budget it needs), a teacher no better than predicting the
majority class on validation (`teacher.weak`), a compressed model no better than that on the
test split (`compressed.weak`: it collapsed to one answer), a phase cut by the wall-clock cap
(`deadline.reached`). All are also listed under `warnings` in the manifest.

Resume: with `checkpoint_dir`, the teacher phase's result is saved there (see
sec_engine.checkpoint), and a later run of the same spec on the same inputs restores it
instead of training the teacher again.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sec_engine import checkpoint
from sec_engine.artifact_contract import position_limit, write_manifest
from sec_engine.calibration import calibrate, device_clock
from sec_engine.callbacks import EngineCallbacks, NullCallbacks, Phase
from sec_engine.data.encoding import encode, pad_id
from sec_engine.data.splits import DataBundle, load_data
from sec_engine.export.artifact import (
    HF_DIR,
    ONNX_INT8,
    Measured,
    MeasureSetup,
    export_compressed,
    measure_setup,
    measure_teacher,
)
from sec_engine.export.manifest import MANIFEST_NAME, library_versions
from sec_engine.models.registry import load_model, select_device
from sec_engine.planning import Plan, Sizes, Throughput, make_plan, planned_spec
from sec_engine.reporting import EVENTS_NAME, TRACE_NAME, Reporter
from sec_engine.result import ArtifactFile, EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from sec_engine.stages.base import EngineState, Stage
from sec_engine.stages.compress import run_compression
from sec_engine.stages.registry import build_stages
from sec_engine.stages.teacher import fine_tune, validation_metrics
from sec_engine.training import Deadline

# The reserve kept back from training for measuring and exporting: the plan's prediction for
# that work times this factor (predictions are rough), at most half of what is left.
EXPORT_RESERVE_FACTOR = 1.5
# A model whose accuracy is not this much above always predicting the most common class has
# learnt nothing useful (a teacher: everything distilled from it is noise; the compressed
# model: it collapsed to one answer).
WEAK_MODEL_MARGIN = 0.01


def run_job(
    spec: JobSpec,
    inputs: ResolvedInputs,
    out_dir: Path,
    callbacks: EngineCallbacks,
    checkpoint_dir: Path | None = None,
    throughput: Throughput | None = None,
) -> EngineResult:
    """Run `spec` on `inputs`, write the artifact into `out_dir`, return its manifest.

    `checkpoint_dir`: where the teacher-phase checkpoint is saved and, on a retry, read back.
    `throughput`: this device's step costs, when known (tests script a device with it);
    None = calibrate at the start.
    """
    started = time.monotonic()
    wall = Deadline(spec.budget.wall_cap_seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(callbacks, out_dir)
    reporter.enter(Phase.PREPARING)
    seed_everything(spec.seed)
    state, stages = prepare_state(spec, inputs, reporter, wall)
    plan = plan_job(state, stages, throughput, elapsed_s=time.monotonic() - started)
    warnings = announce_plan(reporter, plan)
    state.spec = planned_spec(spec, plan)
    timer = PhaseTimer(device_clock(state.device))
    reserve = min(
        wall.remaining() * 0.5,
        plan.predicted_seconds["evaluating_exporting"] * EXPORT_RESERVE_FACTOR,
    )
    training_wall = Deadline(max(0.0, wall.remaining() - reserve))
    work = [plan.predicted_seconds[k] for k in ("teacher", "data", "compressing")]

    reporter.enter(Phase.TEACHER)
    timer.enter("teacher")
    teacher_wall = training_wall.sub(_share(work[0], sum(work)))
    if checkpoint_dir is None:
        _train_teacher(state, stages, teacher_wall)
    else:
        _teacher_with_checkpoint(state, stages, teacher_wall, spec, inputs, checkpoint_dir)
    warnings += _check_teacher(state)

    reporter.enter(Phase.DATA)
    timer.enter("data")
    state.deadline = training_wall.sub(_share(work[1], sum(work[1:])))
    for stage in stages:
        reporter.checkpoint()
        stage.build_data(state)
    reporter.progress(1.0)

    reporter.enter(Phase.COMPRESSING)
    timer.enter("compressing")
    state.deadline = Deadline(training_wall.remaining())
    compressed = _compress(state, stages)
    warnings += state.deadline_hits

    reporter.enter(Phase.EVALUATING)
    timer.enter("evaluating_exporting")
    with tempfile.TemporaryDirectory(prefix="sec-scratch-") as tmp:
        scratch = Path(tmp)
        teacher_setup = measurement_setup(state, state.tokenizer, state.teacher)
        teacher_m = measure_teacher(state.teacher, state.tokenizer, teacher_setup, scratch)
        reporter.event(
            "teacher.measured", "teacher measured on the test split", teacher_m.to_dict()
        )
        reporter.progress(0.5)
        reporter.enter(Phase.EXPORTING)
        student_tokenizer = state.student_tokenizer or state.tokenizer
        setup = measurement_setup(state, student_tokenizer, compressed)
        _clear_previous(out_dir)
        compressed_m = export_compressed(
            compressed,
            student_tokenizer,
            setup,
            out_dir,
            scratch,
            spec.techniques.sqd.runtime,
            max_size_mb=spec.targets.size_target_mb(teacher_m.size_mb),
            graph_passes=[s.rewrite_onnx for s in stages],
        )
    reporter.event("export.done", "artifact written", compressed_m.to_dict())
    measured_on = state.data.test or state.data.validation
    warnings += _check_learnt(
        reporter,
        "compressed.weak",
        "the compressed model",
        compressed_m.metrics["accuracy"],
        [e.label for e in measured_on],
        teacher_setup.split,
    )
    timer.enter(None)
    manifest = _manifest(state, stages, teacher_m, compressed_m, time.monotonic() - started)
    manifest["spec"] = spec.model_dump(mode="json")  # the user's spec; the plan is beside it
    manifest["plan"] = {
        **plan.to_dict(),
        "actual_seconds": timer.seconds,
        "actual_device_seconds": timer.device_seconds,
    }
    manifest["warnings"] = warnings
    files = _finish(out_dir, manifest)
    reporter.progress(1.0)
    return EngineResult(
        out_dir=out_dir, manifest=manifest, files=files, targets_met=manifest["targets_met"]
    )


def dry_run(
    spec: JobSpec, inputs: ResolvedInputs, throughput: Throughput | None = None
) -> dict[str, Any]:
    """What `run_job` would plan for `spec` on this device, without training: the data read
    and split, the model loaded, the calibration run, the plan returned (as in the `plan`
    event, plus `fits` and the budget a useful plan needs)."""
    plan: dict[str, Any] = dry_run_job(spec, inputs, NullCallbacks(), throughput)["plan"]
    return plan


def dry_run_job(
    spec: JobSpec,
    inputs: ResolvedInputs,
    callbacks: EngineCallbacks,
    throughput: Throughput | None = None,
) -> dict[str, Any]:
    """The service's dry run: `dry_run`, reported through `callbacks` as `run_job` reports
    its start (the preparing events, then `plan` and, when no useful plan fits,
    `budget.too_small`). Returns what a real job's manifest says of it: `plan` and
    `warnings`."""
    started = time.monotonic()
    seed_everything(spec.seed)
    with tempfile.TemporaryDirectory(prefix="sec-plan-") as tmp:
        reporter = Reporter(callbacks, Path(tmp))
        reporter.enter(Phase.PREPARING)
        state, stages = prepare_state(spec, inputs, reporter, Deadline(float("inf")))
        plan = plan_job(state, stages, throughput, elapsed_s=time.monotonic() - started)
        warnings = announce_plan(reporter, plan)
    return {"plan": plan.to_dict(), "warnings": warnings}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_state(
    spec: JobSpec, inputs: ResolvedInputs, reporter: Reporter, wall: Deadline
) -> tuple[EngineState, list[Stage]]:
    """Read and split the data, load the base model, encode every split, build the stages.

    Public so that a benchmark can build the *same* state (same split, same encoding) for a
    reference model and measure it with `measurement_setup` exactly as the job measures.
    """
    data = load_data(inputs, spec.split, spec.seed)
    reporter.event("data.loaded", "dataset read and split", data.summary())
    reporter.progress(0.3)
    device = select_device(spec.device)
    loaded = load_model(inputs.model, data.labels)
    reporter.event(
        "model.loaded",
        f"base model loaded ({type(loaded.model).__name__}) on {device.type}",
        {"source": loaded.source, "device": device.type, "class": type(loaded.model).__name__},
    )
    max_len = _max_len(spec, loaded.model)
    features = {
        name: encode(loaded.tokenizer, rows, max_len)
        for name, rows in (
            ("train", data.train),
            ("validation", data.validation),
            ("test", data.test),
            ("unlabelled", data.unlabelled),
        )
    }
    state = EngineState(
        spec=spec,
        device=device,
        data=data,
        tokenizer=loaded.tokenizer,
        model_source=loaded.source,
        teacher=loaded.model.to(device),
        reporter=reporter,
        deadline=wall,
        features=features,
        pad_id=pad_id(loaded.tokenizer),
        labelled=list(range(len(data.train))),
        lambda1=spec.controller.lambda1,
        lambda2=spec.controller.lambda2,
        rng=np.random.default_rng(spec.seed),
        max_len=max_len,
    )
    stages = build_stages(spec)
    for stage in stages:
        stage.initialize(state)
    reporter.event("stages.ready", "techniques enabled", {"stages": [s.name for s in stages]})
    reporter.progress(1.0)
    return state, stages


def plan_job(
    state: EngineState,
    stages: list[Stage],
    throughput: Throughput | None = None,
    *,
    elapsed_s: float = 0.0,
) -> Plan:
    """Calibrate on this device (unless `throughput` is given) and plan the job's steps."""
    if throughput is None:

        def student(model: nn.Module) -> nn.Module:
            for stage in stages:
                model = stage.student_shape(model)
            return model

        throughput = calibrate(
            state.teacher,
            student,
            state.features["train"],
            batch_size=state.spec.training.batch_size,
            pad=state.pad_id,
            device=state.device,
            hidden_states=any(s.wants_hidden_states for s in stages),
            soft_features=[*state.features["train"], *state.features["unlabelled"]],
        )
    data = state.data
    sizes = Sizes(
        train=len(data.train),
        validation=len(data.validation),
        test=len(data.test),
        unlabelled=len(data.unlabelled),
    )
    return make_plan(state.spec, sizes, throughput, elapsed_s=elapsed_s)


def announce_plan(reporter: Reporter, plan: Plan) -> list[str]:
    """The `plan` event, and a loud `budget.too_small` when no useful plan fits; returns the
    warnings for the manifest."""
    seconds = plan.predicted_seconds
    reporter.event(
        "plan",
        f"teacher {plan.teacher_steps} steps, student {plan.student_steps} steps, "
        f"about {plan.predicted_minutes:.1f} of {plan.budget_seconds / 60:g} min "
        f"(teacher {seconds['teacher'] / 60:.1f}, student {seconds['compressing'] / 60:.1f})",
        plan.to_dict(),
    )
    if plan.fits:
        return []
    message = (
        f"budget too small: {plan.budget_seconds / 60:g} min; a useful plan needs about "
        f"{math.ceil(plan.minimum_minutes)} min on this device "
        f"(the spec's full epochs: {math.ceil(plan.full_minutes)} min)"
    )
    reporter.event(
        "budget.too_small",
        message,
        {
            "budget_minutes": plan.budget_seconds / 60,
            "minimum_minutes": round(plan.minimum_minutes, 1),
            "full_minutes": round(plan.full_minutes, 1),
        },
    )
    return [message]


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 1.0


def majority_baseline(labels: list[int | None]) -> float | None:
    """Accuracy of always predicting the most common class (None without labels)."""
    known = [y for y in labels if y is not None]
    return max(known.count(c) for c in set(known)) / len(known) if known else None


def _check_learnt(
    reporter: Reporter, kind: str, who: str, accuracy: float, labels: list[int | None], split: str
) -> list[str]:
    """A model no better than the majority class on `split` is a loud warning (`kind`)."""
    baseline = majority_baseline(labels)
    if baseline is None or accuracy > baseline + WEAK_MODEL_MARGIN:
        return []
    message = (
        f"{who} did not learn: {split} accuracy {accuracy:.4f} vs {baseline:.4f} for always "
        "predicting the most common class (give the job more budget or more labels)"
    )
    reporter.event(kind, message, {f"{split}_accuracy": accuracy, "majority_baseline": baseline})
    return [message]


def _check_teacher(state: EngineState) -> list[str]:
    return _check_learnt(
        state.reporter,
        "teacher.weak",
        "the teacher",
        state.teacher_val_accuracy,
        [e.label for e in state.data.validation],
        "validation",
    )


class PhaseTimer:
    """Wall seconds per phase, and the same in the calibration's clock (on a CPU: process CPU
    time / threads), for the plan's predicted-vs-actual lines in the manifest. The wall says
    how long the user waited; the device clock says whether the plan priced the work right,
    whatever else ran on the machine."""

    def __init__(self, device_clock: Callable[[], float]) -> None:
        self.seconds: dict[str, float] = {}
        self.device_seconds: dict[str, float] = {}
        self._clock = device_clock
        self._current: tuple[str, float, float] | None = None

    def enter(self, name: str | None) -> None:
        now, device_now = time.monotonic(), self._clock()
        if self._current is not None:
            phase, since, device_since = self._current
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - since, 1)
            spent = device_now - device_since
            self.device_seconds[phase] = round(self.device_seconds.get(phase, 0.0) + spent, 1)
        self._current = (name, now, device_now) if name is not None else None


def _position_limit(model: nn.Module) -> int:
    # The rule the server truncates requests with (sec_engine.artifact_contract.positions);
    # 512 only for a config that states no position count (no supported family lacks one).
    config = getattr(model, "config", None)
    limit = None if config is None else position_limit(config.to_dict())
    return 512 if limit is None else limit


def _max_len(spec: JobSpec, model: nn.Module) -> int:
    return min(spec.training.max_seq_len, _position_limit(model))


def _teacher_with_checkpoint(
    state: EngineState,
    stages: list[Stage],
    wall: Deadline,
    spec: JobSpec,
    inputs: ResolvedInputs,
    checkpoint_dir: Path,
) -> None:
    """The teacher phase restored from `checkpoint_dir`, or trained and saved there.

    The fingerprint is of the user's `spec`, not the planned one: a retry whose calibration
    plans a little differently still finds the teacher it trained."""
    fingerprint = checkpoint.input_fingerprint(spec, inputs, state.model_source)
    restored = checkpoint.try_resume(checkpoint_dir, state, stages, fingerprint)
    if restored is not None:
        trained_by, metrics = restored
        _teacher_done(state, metrics, trained_by, resumed=True)
        state.reporter.progress(1.0)
        return
    trained_by, metrics = _train_teacher(state, stages, wall)
    checkpoint.save_teacher(
        checkpoint_dir,
        state,
        stages,
        fingerprint=fingerprint,
        trained_by=trained_by,
        validation=metrics,
    )


def _train_teacher(
    state: EngineState, stages: list[Stage], wall: Deadline
) -> tuple[str, dict[str, float]]:
    """Train the teacher (a stage owns it, or a plain fine-tune) within `wall`; returns who
    trained it and its validation metrics."""
    state.deadline = wall
    owner = next((s.name for s in stages if s.train_teacher(state)), None)
    if owner is None and state.spec.training.teacher_epochs > 0:
        labels = state.train_labels()
        result = fine_tune(
            state,
            state.teacher,
            state.labelled_features(),
            labels,
            epochs=state.spec.training.teacher_epochs,
            deadline=state.deadline,
            seed=state.spec.seed,
        )
        state.reporter.event(
            "teacher.trained",
            f"teacher fine-tuned for {result.steps} steps on {len(labels)} labels",
            {
                "steps": result.steps,
                "best_step": result.best_step,
                "stopped_by_deadline": result.stopped_by_deadline,
            },
        )
    metrics = validation_metrics(state, state.teacher)
    state.teacher_val_accuracy = metrics["accuracy"]
    _teacher_done(state, metrics, owner or "pipeline", resumed=False)
    return owner or "pipeline", metrics


def _teacher_done(
    state: EngineState, metrics: dict[str, float], trained_by: str, *, resumed: bool
) -> None:
    state.reporter.event(
        "teacher.done",
        f"teacher validation accuracy {metrics['accuracy']:.4f}",
        {
            "validation": metrics,
            "trained_by": trained_by,
            "labels_used": len(state.labelled),
            "resumed": resumed,
        },
    )


def _compress(state: EngineState, stages: list[Stage]) -> nn.Module:
    """The student: a copy of the teacher unless SQD builds a smaller one; then compressed."""
    state.teacher.eval()
    for p in state.teacher.parameters():
        p.requires_grad_(False)
    # The default student is a trainable copy of the teacher; SQD replaces it with a smaller
    # one, and AIP (which may run alone) attaches its masks to whichever student is there.
    state.student = copy.deepcopy(state.teacher)
    for p in state.student.parameters():
        p.requires_grad_(True)
    for stage in stages:
        stage.build_student(state)
    if any(s.is_compression or state.soft_sets for s in stages):
        run_compression(state, stages)
    for stage in stages:
        state.reporter.checkpoint()
        stage.finalize(state)
    state.reporter.event(
        "compression.done", "student finalised", {"stages": [s.name for s in stages]}
    )
    return state.student


def measurement_setup(state: EngineState, tokenizer: Any, model: nn.Module) -> MeasureSetup:
    """How the job measures a model: held-out test rows, latency batch, threads (see artifact)."""
    data: DataBundle = state.data
    split, examples = ("test", data.test) if data.test else ("validation", data.validation)
    if tokenizer is state.tokenizer:
        features = state.features[split]
    else:
        features = encode(tokenizer, examples, state.max_len)
    cfg = state.spec
    return measure_setup(
        tokenizer,
        examples,
        features,
        batch_size=cfg.training.batch_size,
        pad_id=pad_id(tokenizer),
        latency_batch=cfg.targets.latency_batch_size,
        latency_seq_len=cfg.targets.latency_seq_len,
        max_positions=_position_limit(model),
        split=split,
    )


def _clear_previous(out_dir: Path) -> None:
    """A rerun into the same folder must not leave stale model files next to the new ones."""
    shutil.rmtree(out_dir / HF_DIR, ignore_errors=True)
    for name in (ONNX_INT8, MANIFEST_NAME):
        (out_dir / name).unlink(missing_ok=True)


def _targets_met(spec: JobSpec, teacher: Measured, compressed: Measured) -> dict[str, bool]:
    t = spec.targets
    met: dict[str, bool] = {}
    if t.max_size_mb is not None:
        met["max_size_mb"] = compressed.size_mb <= t.max_size_mb
    if t.min_compression is not None:
        met["min_compression"] = teacher.size_mb / compressed.size_mb >= t.min_compression
    if t.max_latency_ms is not None:
        met["max_latency_ms"] = compressed.latency.ms_per_batch <= t.max_latency_ms
    drop = teacher.metrics["accuracy"] - compressed.metrics["accuracy"]
    met["max_accuracy_drop"] = drop <= t.max_accuracy_drop + 1e-12
    return met


def _manifest(
    state: EngineState,
    stages: list[Stage],
    teacher: Measured,
    compressed: Measured,
    wall_seconds: float,
) -> dict[str, Any]:
    spec = state.spec
    drop = teacher.metrics["accuracy"] - compressed.metrics["accuracy"]
    return {
        "format_version": 1,
        "spec": spec.model_dump(mode="json"),
        "base_model": {"ref": spec.base_model, "source": state.model_source},
        "labels": list(state.data.labels),
        "data": state.data.summary(),
        "device": state.device.type,
        "teacher": teacher.to_dict(),
        "compressed": compressed.to_dict(),
        "ratios": {
            "size": round(teacher.size_mb / compressed.size_mb, 3),
            "speed": round(teacher.latency.ms_per_batch / compressed.latency.ms_per_batch, 3),
            "accuracy_drop_points": round(100 * drop, 3),
        },
        "labels_used": len(state.labelled),
        "labels_available": len(state.data.train),
        "wall_seconds": round(wall_seconds, 2),
        "targets_met": _targets_met(spec, teacher, compressed),
        "techniques": {s.name: s.report() for s in stages},
        "controller": {
            "adaptive": spec.controller.adaptive,
            "final_lambda1": round(state.lambda1, 6),
            "final_lambda2": round(state.lambda2, 6),
            "decisions": len(state.reporter.rows),
        },
        "files": {
            "hf_model": f"{HF_DIR}/",
            "tokenizer": f"{HF_DIR}/",
            "onnx_int8": ONNX_INT8,
            "trace": TRACE_NAME,
            "events": EVENTS_NAME,
            "hf_model_format": compressed.extra.get("hf_model", {}).get("format"),
        },
        "libraries": library_versions(),
    }


def _finish(out_dir: Path, manifest: dict[str, Any]) -> list[ArtifactFile]:
    # Validated as the contract's Manifest, checksums added to `manifest` and to the file.
    return write_manifest(out_dir, manifest)
