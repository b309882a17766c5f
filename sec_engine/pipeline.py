"""`run_job`: one job spec, run to completion (the engine's public entry point).

Phases, in order (each reported through the callbacks):

- preparing   read and split the data, load the base model safely, build the enabled stages;
- teacher     fine-tune the base (TAL owns this when enabled, to spend the label budget);
- data        ADA augments, TAL pseudo-labels (both with the teacher's soft labels);
- compressing the student (SQD) is trained under the Synergy Controller while AIP prunes;
- evaluating  / exporting: teacher and compressed model measured side by side on the held-out
              test split, the artifact written, manifest.json last (with every file's sha256).

Time: `budget.max_minutes` is one wall-clock deadline. Each phase takes a share of what is
left, training stops at its phase deadline keeping the best state, and a reserve is kept for
measuring and exporting, so the job ends with a model even when the budget runs out.

Resume: with `checkpoint_dir`, the teacher phase's result is saved there (see
sec_engine.checkpoint), and a later run of the same spec on the same inputs restores it
instead of training the teacher again; the teacher's share of the budget then counts as spent.
"""

from __future__ import annotations

import copy
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sec_engine import checkpoint
from sec_engine.callbacks import EngineCallbacks, Phase
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
from sec_engine.export.manifest import (
    MANIFEST_NAME,
    artifact_files,
    library_versions,
    write_json_atomic,
)
from sec_engine.models.registry import load_model, select_device
from sec_engine.reporting import EVENTS_NAME, TRACE_NAME, Reporter
from sec_engine.result import ArtifactFile, EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from sec_engine.stages.base import EngineState, Stage
from sec_engine.stages.compress import run_compression
from sec_engine.stages.registry import build_stages
from sec_engine.stages.teacher import fine_tune, validation_metrics
from sec_engine.training import Deadline

# Shares of the remaining wall-clock budget per phase (the rest carries over when unused).
# The teacher gets the largest share: every later phase learns from it (pseudo-labels, soft
# targets, KD), so its accuracy caps the student's; the student is small and cheap per step.
# At 0.45 the issue-3 run's last TAL round stopped at a third of its epochs while the job
# ended 10 minutes under budget, so the teacher was the bottleneck.
TEACHER_SHARE = 0.6
DATA_SHARE = 0.15
EXPORT_RESERVE = 0.12  # kept back from training for measuring and exporting


def run_job(
    spec: JobSpec,
    inputs: ResolvedInputs,
    out_dir: Path,
    callbacks: EngineCallbacks,
    checkpoint_dir: Path | None = None,
) -> EngineResult:
    """Run `spec` on `inputs`, write the artifact into `out_dir`, return its manifest.

    `checkpoint_dir`: where the teacher-phase checkpoint is saved and, on a retry, read back.
    """
    started = time.monotonic()
    wall = Deadline(spec.budget.max_minutes * 60.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(callbacks, out_dir)
    reporter.enter(Phase.PREPARING)
    seed_everything(spec.seed)
    state, stages = prepare_state(spec, inputs, reporter, wall)
    training_wall = Deadline(wall.remaining() * (1.0 - EXPORT_RESERVE))

    reporter.enter(Phase.TEACHER)
    if checkpoint_dir is None:
        _train_teacher(state, stages, training_wall)
    else:
        training_wall = _teacher_with_checkpoint(
            state, stages, training_wall, inputs, checkpoint_dir
        )

    reporter.enter(Phase.DATA)
    data_deadline = training_wall.sub(DATA_SHARE)
    state.deadline = data_deadline
    for stage in stages:
        reporter.checkpoint()
        stage.build_data(state)
    reporter.progress(1.0)

    reporter.enter(Phase.COMPRESSING)
    state.deadline = Deadline(training_wall.remaining())
    compressed = _compress(state, stages)

    reporter.enter(Phase.EVALUATING)
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
            max_size_mb=_size_limit(spec, teacher_m),
        )
    reporter.event("export.done", "artifact written", compressed_m.to_dict())
    manifest = _manifest(state, stages, teacher_m, compressed_m, time.monotonic() - started)
    files = _finish(out_dir, manifest)
    reporter.progress(1.0)
    return EngineResult(
        out_dir=out_dir, manifest=manifest, files=files, targets_met=manifest["targets_met"]
    )


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


def _position_limit(model: nn.Module) -> int:
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    # RoBERTa-style models offset positions by the padding index (+2); stay clear of the edge.
    offset = 2 if getattr(model.config, "model_type", "") in {"roberta", "mpnet"} else 0
    return positions - offset


def _max_len(spec: JobSpec, model: nn.Module) -> int:
    return min(spec.training.max_seq_len, _position_limit(model))


def _teacher_with_checkpoint(
    state: EngineState,
    stages: list[Stage],
    wall: Deadline,
    inputs: ResolvedInputs,
    checkpoint_dir: Path,
) -> Deadline:
    """The teacher phase restored from `checkpoint_dir`, or trained and saved there; returns
    the training deadline left for the later phases (the teacher's share is spent either way)."""
    fingerprint = checkpoint.input_fingerprint(state.spec, inputs, state.model_source)
    restored = checkpoint.try_resume(checkpoint_dir, state, stages, fingerprint)
    if restored is not None:
        trained_by, metrics = restored
        _teacher_done(state, metrics, trained_by, resumed=True)
        state.reporter.progress(1.0)
        return Deadline(wall.remaining() * (1.0 - TEACHER_SHARE))
    trained_by, metrics = _train_teacher(state, stages, wall)
    checkpoint.save_teacher(
        checkpoint_dir,
        state,
        stages,
        fingerprint=fingerprint,
        trained_by=trained_by,
        validation=metrics,
    )
    return wall


def _train_teacher(
    state: EngineState, stages: list[Stage], wall: Deadline
) -> tuple[str, dict[str, float]]:
    """Train the teacher (a stage owns it, or a plain fine-tune); returns who trained it and
    its validation metrics."""
    state.deadline = wall.sub(TEACHER_SHARE)
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


def _size_limit(spec: JobSpec, teacher: Measured) -> float | None:
    """The job's size target in MB, absolute or relative to the measured teacher."""
    t = spec.targets
    if t.max_size_mb is not None:
        return t.max_size_mb
    if t.min_compression is not None:
        return teacher.size_mb / t.min_compression
    return None


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
    files = artifact_files(out_dir)
    manifest["sha256"] = {f.path: f.sha256 for f in files}
    manifest["file_sizes"] = {f.path: f.size_bytes for f in files}
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return files
