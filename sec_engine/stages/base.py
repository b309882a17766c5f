"""The lifecycle every technique plugs into, and the one state object they share.

A stage is built from its frozen config section of the job spec (docs/DESIGN_NOTES.md: config -> stage
-> pure ops). The pipeline calls the hooks of every *enabled* stage, in the order
`sec_engine/stages/registry.py` builds them (by the phase and order each technique is
registered with: data techniques, then model techniques, then export techniques), at fixed
points:

1. ``initialize``      after model and data are loaded (check availability, plan);
2. ``train_teacher``   the first stage returning True owns teacher training (TAL does, to
                       spend the label budget); otherwise the pipeline fine-tunes on all labels;
3. ``build_data``      after the teacher exists (ADA augments, TAL pseudo-labels);
4. ``build_student``   before compression (SQD makes a smaller student from the teacher);
5. ``loss_terms``      every compression step: extra loss terms, grouped as data or model terms;
6. ``after_eval``      every evaluation, with the controller's decision (AIP prunes, ADA adapts);
7. ``finalize``        after compression (AIP removes pruned structure, SQD strips QAT);
8. ``rewrite_onnx``    at export, on the student's fp32 ONNX graph before int8 quantization;
9. ``report``          what the stage did, for the manifest.

The controller reads a stage through ``progress_toward_target`` (how much of its own
compression target it has reached) and speaks to it through the generic ``Decision`` given
to ``after_eval`` (compression pressure, restore-best), never by the technique's name.

``checkpoint_state`` / ``restore_checkpoint`` carry what a stage made during the teacher phase
into the teacher checkpoint (sec_engine.checkpoint), so a resumed attempt that skips
``train_teacher`` ends with the same later phases and the same ``report``.

Stages never call each other or the controller; they only read and write the shared state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from sec_engine.compression.relations import QKV
from sec_engine.data.encoding import Batch, Features
from sec_engine.data.splits import DataBundle
from sec_engine.reporting import Reporter
from sec_engine.spec import JobSpec
from sec_engine.training import Deadline

if TYPE_CHECKING:
    from sec_engine.controller.policy import Decision


@dataclass
class SoftSet:
    """Extra training rows with soft targets (augmented or pseudo-labelled), for R_data."""

    name: str
    features: list[Features]
    targets: np.ndarray  # (n, num_labels) probabilities from the teacher
    weights: np.ndarray  # (n,) per-row weight (adaptive strength / confidence)


@dataclass
class EngineState:
    spec: JobSpec
    device: torch.device
    data: DataBundle
    tokenizer: Any
    model_source: str
    teacher: nn.Module
    reporter: Reporter
    deadline: Deadline
    features: dict[str, list[Features]]  # "train", "validation", "test", "unlabelled"
    pad_id: int
    labelled: list[int] = field(default_factory=list)  # train rows whose labels are used
    soft_sets: list[SoftSet] = field(default_factory=list)
    student: nn.Module | None = None
    teacher_val_accuracy: float = 0.0
    lambda1: float = 0.5
    lambda2: float = 0.5
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    max_len: int = 128  # tokens per row after truncation
    data_version: int = 0  # bumped when soft_sets change, so the loop rebuilds its pool
    student_tokenizer: Any | None = None  # set when vocabulary pruning rewrote the tokenizer
    deadline_hits: list[str] = field(default_factory=list)  # what the wall-clock cap cut short

    @property
    def num_labels(self) -> int:
        return len(self.data.labels)

    def train_labels(self) -> np.ndarray:
        return np.array([self.data.train[i].label for i in self.labelled], dtype=np.int64)

    def labelled_features(self) -> list[Features]:
        return [self.features["train"][i] for i in self.labelled]

    def note_deadline(self, where: str, detail: str) -> None:
        """The hard wall-clock cap stopped `where` before its planned work was done: a
        `deadline.reached` event and a warning in the manifest, never a silent cut."""
        message = f"the wall-clock cap cut {where} short: {detail}"
        self.deadline_hits.append(message)
        self.reporter.event("deadline.reached", message, {"where": where})


@dataclass
class StepContext:
    """What a stage sees in `loss_terms`: the current batch and the forward passes done on it."""

    batch: Batch
    student_logits: torch.Tensor
    student_hidden: tuple[torch.Tensor, ...] | None
    teacher_logits: torch.Tensor | None
    teacher_hidden: tuple[torch.Tensor, ...] | None
    labels: torch.Tensor | None  # hard labels, when the batch is labelled
    soft_targets: torch.Tensor | None  # soft targets, when the batch is from a SoftSet
    row_weights: torch.Tensor | None
    # The q/k/v projections of the layers a stage's `relation_layers` names, when one does.
    student_qkv: QKV | None = None
    teacher_qkv: QKV | None = None


@dataclass
class LossTerms:
    """Loss pieces a stage adds; the loop weights data terms by λ1 and model terms by λ2."""

    task: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted (e.g. α·KD)
    data: dict[str, torch.Tensor] = field(default_factory=dict)
    model: dict[str, torch.Tensor] = field(default_factory=dict)


class Stage:
    """Base class: every hook is a no-op, so a stage overrides only what it does."""

    name: ClassVar[str] = "stage"
    wants_hidden_states: bool = False
    wants_teacher_outputs: bool = False
    is_compression: bool = False
    # (student layer, teacher layer) whose self-attention projections the loop captures for
    # this stage's `loss_terms` (StepContext.student_qkv / teacher_qkv); set by build_student.
    relation_layers: tuple[int, int] | None = None

    def initialize(self, state: EngineState) -> None:
        return None

    def train_teacher(self, state: EngineState) -> bool:
        return False

    def build_data(self, state: EngineState) -> None:
        return None

    def build_student(self, state: EngineState) -> None:
        return None

    def student_shape(self, model: nn.Module) -> nn.Module:
        """The student this stage would build from `model` (a throwaway copy of the teacher),
        without side effects: the calibration times steps on it before any training."""
        return model

    def loss_terms(self, state: EngineState, ctx: StepContext) -> LossTerms:
        return LossTerms()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters the stage adds outside the student (e.g. a KD projection)."""
        return []

    def after_step(self, state: EngineState) -> None:
        return None

    def after_eval(self, state: EngineState, decision: Decision) -> None:
        return None

    def sparsity(self) -> float | None:
        """Current sparsity of what this stage prunes (for the trace), if it prunes."""
        return None

    def progress_toward_target(self) -> float | None:
        """0..1 of this stage's own compression target reached (the controller's size proxy,
        the least of the stages' progress); None when the stage has no such target."""
        return None

    def planned_vocab_size(self) -> int | None:
        """Embedding rows the exported model will keep, when vocabulary pruning is planned."""
        return None

    def finalize(self, state: EngineState) -> None:
        return None

    def rewrite_onnx(self, fp32_onnx: Path, scratch: Path) -> Path:
        """Export phase: the student's fp32 ONNX graph, rewritten (into `scratch`) before the
        int8 quantization that makes the artifact's ONNX file; returns the graph to quantize."""
        return fp32_onnx

    def checkpoint_state(self) -> dict[str, Any]:
        """What this stage made in the teacher phase and needs later: JSON-able values and
        SoftSets (stored as arrays). Only stages that do work in the teacher phase need it."""
        return {}

    def restore_checkpoint(self, state: EngineState, saved: dict[str, Any]) -> None:
        """Take back what `checkpoint_state` gave, instead of running `train_teacher`."""
        return None

    def report(self) -> dict[str, Any]:
        return {}
