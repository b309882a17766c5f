"""AIP stage: adaptive iterative pruning (paper eq. 3: θ_pruned = AIP(θ, P, T)).

Schedule: pruning advances in steps, as a *level* from 0 to 1 of the target sparsities. At
every evaluation the controller compares the validation drop with T and the stage applies
its decision:

- within T → the current masks become the "last good" ones, and the level grows by
  `step × compression_pressure` (the controller raises the pressure while the slack is large);
- over T (`restore_best`) → back off: the last good masks are restored (regrowth) and the
  step halves;
- targets met / hold (pressure 0) → nothing changes.

Structured mode (default): heads and FFN neurons are ranked by first-order Taylor importance
on training batches (masked structures keep a score, so a later selection can regrow them),
masked through gates during training, then physically removed in `finalize`: the exported
model is smaller and faster on any hardware. The group-sparsity penalty is this stage's
R_model term. Unstructured mode: global magnitude pruning with masks re-applied after every
step; its size gain is reported from sparse storage only (the dense export does not shrink).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.compression.aip_ops import (
    group_sparsity_penalty,
    prune_structured,
    select_structures,
    taylor_importance,
)
from sec_engine.compression.gates import StructuredMasks, attach_masks, detach_masks
from sec_engine.compression.sparse import (
    WeightMasks,
    apply_weight_masks,
    magnitude_prune,
    save_sparse_safetensors,
    weight_sparsity,
)
from sec_engine.data.encoding import Batch
from sec_engine.spec import AipConfig, PruningMode
from sec_engine.stages.base import EngineState, LossTerms, Stage, StepContext
from sec_engine.training import epoch_batches, forward

if TYPE_CHECKING:
    from sec_engine.controller.policy import Decision

TAYLOR_BATCHES = 4
MIN_STEP = 0.02


def _clone(masks: StructuredMasks) -> StructuredMasks:
    return StructuredMasks(
        [h.detach().clone() for h in masks.heads], [n.detach().clone() for n in masks.neurons]
    )


class AipStage(Stage):
    name = "aip"
    is_compression = True

    def __init__(self, config: AipConfig) -> None:
        self.config = config
        self.structured = config.mode == PruningMode.STRUCTURED
        self.level = 0.0
        self.good_level = 0.0
        self.step = config.initial_step
        self.masks: StructuredMasks | None = None
        self.good_masks: StructuredMasks | None = None
        self.weight_masks: WeightMasks | None = None
        self.good_weight_masks: WeightMasks | None = None
        self.history: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {"mode": str(config.mode)}
        self._round = 0

    def build_student(self, state: EngineState) -> None:
        assert state.student is not None
        if self.structured:
            self.masks = StructuredMasks.ones(state.student)
            self.good_masks = _clone(self.masks)
            attach_masks(state.student, self.masks)

    def loss_terms(self, state: EngineState, ctx: StepContext) -> LossTerms:
        if not self.structured or state.student is None:
            return LossTerms()
        return LossTerms(model={"group_sparsity": group_sparsity_penalty(state.student)})

    def after_step(self, state: EngineState) -> None:
        if self.weight_masks is not None and state.student is not None:
            apply_weight_masks(state.student, self.weight_masks)

    def after_eval(self, state: EngineState, decision: Decision) -> None:
        assert state.student is not None
        entry: dict[str, Any] = {"level_before": round(self.level, 4), "rule": decision.rule}
        if decision.restore_best:
            self.level = self.good_level
            self.step = max(MIN_STEP, self.step * 0.5)
            self._restore(state.student)
            entry["action"] = "restore_last_good"
        else:
            self._mark_good()
            if decision.compression_pressure <= 0 or self.level >= 1.0:
                entry["action"] = "hold"
            else:
                self.level = min(1.0, self.level + self.step * decision.compression_pressure)
                self._prune_to_level(state)
                entry["action"] = "prune"
        entry.update(
            level_after=round(self.level, 4), step=round(self.step, 4), sparsity=self.sparsity()
        )
        self.history.append(entry)

    def _mark_good(self) -> None:
        self.good_level = self.level
        if self.masks is not None:
            self.good_masks = _clone(self.masks)
        if self.weight_masks is not None:
            self.good_weight_masks = {k: v.clone() for k, v in self.weight_masks.items()}

    def _restore(self, student: nn.Module) -> None:
        if self.structured and self.good_masks is not None:
            self.masks = _clone(self.good_masks)
            detach_masks(student)
            attach_masks(student, self.masks)
        else:
            # Regrowth: weights zeroed since the good point may train back to non-zero.
            self.weight_masks = self.good_weight_masks

    def _prune_to_level(self, state: EngineState) -> None:
        assert state.student is not None
        if not self.structured:
            self.weight_masks = magnitude_prune(
                state.student, self.level * self.config.target_weight_sparsity
            )
            return
        labels = torch.as_tensor(state.train_labels(), dtype=torch.long)
        self._round += 1
        batches = epoch_batches(
            state.labelled_features(),
            state.spec.training.batch_size,
            state.pad_id,
            state.spec.seed + 100 + self._round,
        )

        def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            logits, _ = forward(model, batch.inputs, state.device)
            return F.cross_entropy(logits, labels[batch.index].to(state.device))

        scores = taylor_importance(state.student, batches, loss_fn, max_batches=TAYLOR_BATCHES)
        self.masks = select_structures(
            scores,
            head_sparsity=self.level * self.config.target_head_sparsity,
            neuron_sparsity=self.level * self.config.target_ffn_sparsity,
        )
        detach_masks(state.student)
        attach_masks(state.student, self.masks)

    def sparsity(self) -> float | None:
        if self.masks is not None:
            return round((self.masks.head_sparsity() + self.masks.neuron_sparsity()) / 2, 4)
        if self.weight_masks is not None:
            kept = sum(int(m.sum()) for m in self.weight_masks.values())
            total = sum(m.numel() for m in self.weight_masks.values())
            return round(1 - kept / total, 4) if total else 0.0
        return 0.0

    def progress_toward_target(self) -> float | None:
        return self.level

    def finalize(self, state: EngineState) -> None:
        assert state.student is not None
        self.info["level"] = round(self.good_level, 4)
        if self.structured:
            masks = self.good_masks or StructuredMasks.ones(state.student)
            report = prune_structured(state.student, masks)
            self.info.update(
                head_sparsity=round(masks.head_sparsity(), 4),
                ffn_sparsity=round(masks.neuron_sparsity(), 4),
                heads_per_layer=report.heads_after,
                ffn_width_per_layer=report.neurons_after,
            )
            state.reporter.event("aip.pruned", "pruned heads and neurons removed", dict(self.info))
            return
        if self.good_weight_masks is not None:
            apply_weight_masks(state.student, self.good_weight_masks)
        with tempfile.TemporaryDirectory(prefix="sec-sparse-") as tmp:
            sparse = save_sparse_safetensors(
                state.student.state_dict(), Path(tmp) / "sparse.safetensors"
            )
        self.info.update(
            weight_sparsity=round(weight_sparsity(state.student), 4),
            sparse_storage_mb=round(sparse.nbytes / (1024 * 1024), 4),
            note="the int8 ONNX export stores weights densely; the gain is real only in sparse storage",
        )

    def report(self) -> dict[str, Any]:
        return {**self.info, "schedule": self.history}
