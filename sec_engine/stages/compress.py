"""The compression loop: trains the student under eq. 5 and applies the controller's decisions.

Per step: a labelled batch gives L_task (cross-entropy; under QAT this is the paper's L_Q) plus
the stages' task terms (SQD's α·L_KD); with the share of steps the controller gives the data
module, a batch of augmented / pseudo-labelled rows adds λ1·R_data (soft cross-entropy to the
teacher, row-weighted, times the share of training rows those sets make up); the stages' model
terms (AIP's group-sparsity penalty) add λ2·R_model, scaled by (1 + distance to the size
target). Every `eval_every_steps` the student is evaluated on validation, the controller
decides, stages react (AIP prunes or backs off) and the decision is traced.

What is kept: the weights at the latest evaluation that was within the threshold T of the
controller's reference (the teacher, or the student's best so far when lower: most trained,
most compressed, still acceptable); if none was, the most accurate ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.callbacks import Phase, TraceRow
from sec_engine.compression.relations import capture_qkv_if, qkv_tuple
from sec_engine.controller.policy import Decision, Observation, decide, initial_decision
from sec_engine.data.encoding import Batch, Features, collate
from sec_engine.spec import Int4Config
from sec_engine.stages.base import EngineState, LossTerms, SoftSet, Stage, StepContext
from sec_engine.stages.teacher import validation_metrics
from sec_engine.stages.teacher_cache import TeacherCache
from sec_engine.training import (
    epoch_batches,
    forward,
    make_optimizer,
    soft_cross_entropy,
    steps_for,
)


@dataclass
class _DataPool:
    """All soft-labelled rows in one place, sampled with a seeded generator."""

    sets: list[SoftSet]
    seen: int = 0
    features: list[dict[str, list[int]]] = field(default_factory=list)
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def __post_init__(self) -> None:
        for s in self.sets:
            self.features.extend(s.features)
        if self.sets:
            self.targets = np.concatenate([s.targets for s in self.sets]).astype(np.float32)
            self.weights = np.concatenate([s.weights for s in self.sets]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.features)

    def sample(
        self, rng: np.random.Generator, batch_size: int, pad: int
    ) -> tuple[Batch, torch.Tensor, torch.Tensor]:
        index = [
            int(i) for i in rng.choice(len(self), size=min(batch_size, len(self)), replace=False)
        ]
        self.seen += len(index)
        batch = Batch(collate([self.features[i] for i in index], pad), index)
        return batch, torch.from_numpy(self.targets[index]), torch.from_numpy(self.weights[index])


def _bytes_per_weight(four_bits: bool, block_size: int) -> float:
    """One byte per int8 weight; half a byte per int4 weight plus one fp32 scale per block."""
    return 0.5 + 4 / block_size if four_bits else 1.0


def estimate_int8_mb(
    model: nn.Module, vocab_keep: int | None = None, int4: Int4Config | None = None
) -> float:
    """Size of the int8 export, estimated from what the model holds now (no file written).

    Matrices (and embeddings) cost one byte per weight after dynamic int8 quantization; vectors
    stay fp32. Masked heads / neurons are discounted through the gates' kept fractions; a
    planned vocabulary pruning shrinks the word embedding to `vocab_keep` rows. With
    `techniques.int4` on, its embedding tables and/or encoder matrices cost what 4 bits do.
    """
    from sec_engine.compression.gates import attached_masks
    from sec_engine.models.arch import layer_views

    on = int4 if int4 is not None and int4.enabled else None
    block = on.block_size if on else 32
    embedding_bytes = _bytes_per_weight(bool(on and on.embeddings), block)
    matrix_bytes = _bytes_per_weight(bool(on and on.matmuls), block)
    total = 0.0
    for name, p in model.named_parameters():
        n = p.numel()
        if vocab_keep is not None and p.ndim == 2 and "word_embeddings" in name:
            n = vocab_keep * p.shape[1]
        if p.ndim < 2:
            total += 4 * n
        elif "embeddings" in name:
            total += embedding_bytes * n
        elif "pooler" in name or "classifier" in name:
            total += n  # exported as Gemms, which int4 leaves to int8
        else:
            total += matrix_bytes * n
    masks = attached_masks(model)
    if masks is not None:
        for view, heads, neurons in zip(
            layer_views(model), masks.heads, masks.neurons, strict=True
        ):
            removed_heads = float((heads == 0).sum())
            removed_neurons = float((neurons == 0).sum())
            hidden = view.attn_out.out_features
            removed = removed_heads * view.head_dim * hidden * 4  # q, k, v rows and o columns
            removed += removed_neurons * hidden * 2  # FFN in rows and out columns
            total -= matrix_bytes * removed
    return total / (1024 * 1024)


def teacher_fp32_mb(state: EngineState) -> float:
    """The teacher's size in MB as the loop sees it: fp32 parameters (no file written)."""
    return sum(p.numel() * 4 for p in state.teacher.parameters()) / (1024 * 1024)


def threshold(state: EngineState) -> float:
    aip_t = state.spec.techniques.aip.accuracy_threshold
    return aip_t if aip_t is not None else state.spec.targets.max_accuracy_drop


class KeepBest:
    """What the loop keeps (see the module docstring): the student's weights at the latest
    judgement within T of the controller's reference, else the most accurate ones."""

    def __init__(self, student: nn.Module, teacher_accuracy: float, threshold: float) -> None:
        self.student = student
        self.teacher_accuracy = teacher_accuracy
        self.threshold = threshold
        self.good: tuple[int, dict[str, torch.Tensor]] | None = None
        self.best: tuple[float, dict[str, torch.Tensor]] = (
            -1.0,
            copy.deepcopy(student.state_dict()),
        )

    @property
    def best_accuracy(self) -> float:
        return self.best[0]

    def judge(self, step: int, accuracy: float) -> None:
        """The weights after `step`, at `accuracy` on validation. The reference is the
        controller's (`Observation.reference_accuracy`): the teacher, or the student's best so
        far, this accuracy included, when that is lower."""
        reference = min(self.teacher_accuracy, max(self.best[0], accuracy))
        if reference - accuracy <= self.threshold:
            self.good = (step, copy.deepcopy(self.student.state_dict()))
        if accuracy > self.best[0]:
            self.best = (accuracy, copy.deepcopy(self.student.state_dict()))

    def restore(self, state: EngineState) -> None:
        """Load the kept weights into the student and say which they are."""
        good = self.good
        kept = "within_threshold" if good is not None else "most_accurate"
        self.student.load_state_dict(good[1] if good is not None else self.best[1])
        self.student.eval()
        state.reporter.event(
            "compression.kept",
            f"kept the {kept.replace('_', ' ')} student state",
            {
                "kept": kept,
                "step": good[0] if good is not None else None,
                "best_accuracy": self.best[0],
            },
        )


class LossAssembly:
    """Eq. 5 for one step: L_task + the stages' task terms + λ1·R_data + λ2·R_model (see the
    module docstring). Owns what the terms are drawn from: the teacher's outputs (cached once
    when a stage wants them) and the pool of soft-labelled rows, sampled with a seeded
    generator in the share of steps the controller gives the data module."""

    def __init__(self, state: EngineState, stages: list[Stage], feats: list[Features]) -> None:
        self.state = state
        self.stages = stages
        self.labels = torch.as_tensor(state.train_labels(), dtype=torch.long)
        self.labelled_rows = len(feats)
        self.pool = _DataPool(list(state.soft_sets))
        self.pool_version = state.data_version
        self.data_rng = np.random.default_rng([state.spec.seed, 7])
        self.wants_hidden = any(s.wants_hidden_states for s in stages)
        self.wants_teacher = any(s.wants_teacher_outputs for s in stages)
        # Only one stage distils attention relations (SQD); its layers are captured for all.
        self.relation_layers = next(
            (s.relation_layers for s in stages if s.relation_layers is not None), None
        )
        self.cache = (
            TeacherCache.build(
                state.teacher,
                feats,
                hidden=self.wants_hidden,
                pad=state.pad_id,
                device=state.device,
                qkv_layer=self.relation_layers[1] if self.relation_layers else None,
            )
            if self.wants_teacher
            else None
        )
        self.data_credit = 0.0

    def step(
        self, student: nn.Module, batch: Batch, decision: Decision, size_gap: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss to minimise on `batch`, and its L_task, R_data and R_model (R_model
        already scaled by the distance to the size target)."""
        state, stages = self.state, self.stages
        layers = self.relation_layers
        with capture_qkv_if(student, layers[0] if layers else None) as s_captured:
            s_logits, s_hidden = forward(
                student, batch.inputs, state.device, hidden_states=self.wants_hidden
            )
        t_logits = t_hidden = t_qkv = None
        if self.cache is not None:
            width = int(batch.inputs["input_ids"].shape[1])
            t_logits, t_hidden = self.cache.batch(batch.index, width, state.device)
            t_qkv = self.cache.qkv_batch(batch.index, width, state.device)
        elif self.wants_teacher:
            with (
                torch.no_grad(),
                capture_qkv_if(state.teacher, layers[1] if layers else None) as t_cap,
            ):
                t_logits, t_hidden = forward(
                    state.teacher, batch.inputs, state.device, hidden_states=self.wants_hidden
                )
            t_qkv = qkv_tuple(t_cap) if t_cap is not None else None
        y = self.labels[batch.index].to(state.device)
        loss_task = F.cross_entropy(s_logits, y)
        s_qkv = qkv_tuple(s_captured) if s_captured is not None else None
        ctx = StepContext(
            batch, s_logits, s_hidden, t_logits, t_hidden, y, None, None, s_qkv, t_qkv
        )
        terms = [s.loss_terms(state, ctx) for s in stages]
        loss = loss_task + sum(
            (v for t in terms for v in t.task.values()), torch.zeros((), device=state.device)
        )
        r_model = _sum_group(terms, "model", state.device)
        r_data = _sum_group(terms, "data", state.device)
        if state.data_version != self.pool_version:  # ADA rebuilt its set from the student's losses
            self.pool, self.pool_version = (
                _DataPool(list(state.soft_sets), seen=self.pool.seen),
                state.data_version,
            )
        pool = self.pool
        self.data_credit += decision.data_share
        if len(pool) and self.data_credit >= 1.0:
            self.data_credit -= 1.0
            batch_size = state.spec.training.batch_size
            d_batch, d_targets, d_weights = pool.sample(self.data_rng, batch_size, state.pad_id)
            d_logits, _ = forward(student, d_batch.inputs, state.device)
            per_row = soft_cross_entropy(d_logits, d_targets.to(state.device))
            w = d_weights.to(state.device)
            share = len(pool) / (len(pool) + self.labelled_rows)
            r_data = r_data + share * (per_row * w).sum() / w.sum().clamp_min(1e-8)
        r_model = r_model * (1.0 + size_gap)
        loss = loss + state.lambda1 * r_data + state.lambda2 * r_model
        return loss, loss_task, r_data, r_model


def run_compression(state: EngineState, stages: list[Stage]) -> None:
    """The loop: a step of `LossAssembly` at a time; every `eval_every_steps` an observation,
    the controller's decision, the stages' reaction and a judgement by `KeepBest`, whose
    kept weights the student ends with."""
    spec = state.spec
    cfg = spec.training
    student = state.student
    assert student is not None
    student.to(state.device).train()
    feats = state.labelled_features()
    total = steps_for(len(feats), cfg.batch_size, cfg.student_epochs)
    extra = [p for s in stages for p in s.extra_parameters()]
    lr = cfg.student_learning_rate or cfg.learning_rate
    optimizer, scheduler = make_optimizer(student, lr, total, extra_params=extra)
    batches = epoch_batches(feats, cfg.batch_size, state.pad_id, spec.seed + 1)
    losses = LossAssembly(state, stages, feats)
    target_mb = spec.targets.size_target_mb(teacher_fp32_mb(state))
    decision = initial_decision(state.lambda1, state.lambda2)
    keep = KeepBest(student, state.teacher_val_accuracy, threshold(state))
    size_gap = 1.0
    running: dict[str, float] = {"task": 0.0, "data": 0.0, "model": 0.0, "n": 0.0}
    state.reporter.event(
        "compression.start", f"training the student for {total} steps", {"steps": total}
    )

    last_eval = 0
    for step in range(1, total + 1):
        state.reporter.checkpoint()
        if state.deadline.expired() or decision.stop_training:
            if state.deadline.expired():
                state.note_deadline("student training", f"{step - 1} of {total} planned steps")
            if step - 1 > last_eval:
                # The steps since the last evaluation are trained weights too: judge them
                # before choosing, or a deadline between evaluations throws them away.
                keep.judge(step - 1, validation_metrics(state, student)["accuracy"])
            break
        batch = next(batches)
        loss, loss_task, r_data, r_model = losses.step(student, batch, decision, size_gap)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        for s in stages:
            s.after_step(state)
        running["task"] += float(loss_task.detach())
        running["data"] += float(r_data.detach())
        running["model"] += float(r_model.detach())
        running["n"] += 1
        if step % 10 == 0:
            state.reporter.progress(step / total)
        if step % cfg.eval_every_steps == 0 or step == total:
            last_eval = step
            obs, acc = _observe(
                state, stages, losses.pool, step, total, decision, target_mb, keep.best_accuracy
            )
            size_gap = obs.size_gap
            decision = decide(
                obs,
                adaptive=spec.controller.adaptive,
                initial=(spec.controller.lambda1, spec.controller.lambda2),
            )
            keep.judge(step, acc)
            _trace(state, stages, step, obs, decision, running)
            running = dict.fromkeys(running, 0.0)
            state.lambda1, state.lambda2 = decision.lambda1, decision.lambda2
            for s in stages:
                s.after_eval(state, decision)
            student.train()

    keep.restore(state)


def _sum_group(terms: list[LossTerms], group: str, device: torch.device) -> torch.Tensor:
    total = torch.zeros((), device=device)
    for t in terms:
        for v in getattr(t, group).values():
            total = total + v
    return total


def _observe(
    state: EngineState,
    stages: list[Stage],
    pool: _DataPool,
    step: int,
    total: int,
    decision: Decision,
    target_mb: float | None,
    best_before: float,
) -> tuple[Observation, float]:
    """Evaluate the student; the observation's reference includes this evaluation's accuracy
    in the student's best so far (a new best is never a drop). `time_used` is the share of
    the planned steps done, not of the wall clock: load must not change the decisions."""
    assert state.student is not None
    acc = validation_metrics(state, state.student)["accuracy"]
    progress = [p for s in stages if (p := s.progress_toward_target()) is not None]
    vocab_keep = next((v for s in stages if (v := s.planned_vocab_size()) is not None), None)
    obs = Observation(
        step=step,
        val_accuracy=acc,
        teacher_accuracy=state.teacher_val_accuracy,
        threshold=threshold(state),
        lambda1=state.lambda1,
        lambda2=state.lambda2,
        data_share=decision.data_share,
        size_mb=round(estimate_int8_mb(state.student, vocab_keep, state.spec.techniques.int4), 4),
        size_target_mb=target_mb,
        sparsity_progress=min(progress) if progress else 1.0,
        data_budget_used=min(1.0, pool.seen / len(pool)) if len(pool) else 0.0,
        time_used=min(1.0, step / total) if total else 1.0,
        best_accuracy=max(best_before, acc),
    )
    return obs, acc


def _trace(
    state: EngineState,
    stages: list[Stage],
    step: int,
    obs: Observation,
    decision: Decision,
    running: dict[str, float],
) -> None:
    n = max(1.0, running["n"])
    sparsity = next((v for s in stages if (v := s.sparsity()) is not None), None)
    state.reporter.trace(
        TraceRow(
            step=step,
            phase=Phase.COMPRESSING,
            lambda1=decision.lambda1,
            lambda2=decision.lambda2,
            loss_task=running["task"] / n,
            loss_data=running["data"] / n,
            loss_model=running["model"] / n,
            val_accuracy=obs.val_accuracy,
            sparsity=sparsity,
            size_mb=obs.size_mb,
            labels_used=len(state.labelled),
            observation=obs.to_dict(),
            decision=decision.to_dict(),
        )
    )
