"""Fine-tuning the teacher: the pretrained base on the labelled rows the job may use.

Used by the pipeline when no stage owns teacher training (all labels), and by TAL between
acquisition rounds (the labels bought so far, plus pseudo-labelled rows as a consistency term).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.data.encoding import Batch, Features
from sec_engine.evaluation.metrics import classification_metrics
from sec_engine.stages.base import EngineState, SoftSet
from sec_engine.training import (
    Deadline,
    FitResult,
    epoch_batches,
    fit,
    forward,
    predict_logits,
    soft_cross_entropy,
)


def validation_metrics(state: EngineState, model: nn.Module) -> dict[str, float]:
    logits = predict_logits(
        model,
        state.features["validation"],
        state.spec.training.batch_size,
        state.pad_id,
        state.device,
    )
    labels = np.array([e.label for e in state.data.validation], dtype=np.int64)
    return classification_metrics(logits, labels)


def fine_tune(
    state: EngineState,
    model: nn.Module,
    features: list[Features],
    labels: np.ndarray,
    *,
    epochs: float,
    deadline: Deadline,
    seed: int,
    progress: tuple[float, float] = (0.0, 1.0),
    pseudo: SoftSet | None = None,
    pseudo_weight: float = 0.0,
) -> FitResult:
    """Cross-entropy fine-tuning with best-on-validation selection (see training.fit).

    With `pseudo` (TAL's semi-supervised part) every step also draws half a batch of
    pseudo-labelled rows and adds `pseudo_weight` × their confidence-weighted soft
    cross-entropy: L_TAL = L_TL + λ·L_AL.
    """
    cfg = state.spec.training
    model.to(state.device)
    total = max(1, int(np.ceil(len(features) / cfg.batch_size * epochs))) if epochs > 0 else 0
    label_t = torch.as_tensor(labels, dtype=torch.long)

    use_pseudo = pseudo is not None and len(pseudo.features) > 0 and pseudo_weight > 0
    pseudo_batches = (
        epoch_batches(pseudo.features, max(1, cfg.batch_size // 2), state.pad_id, seed + 1)
        if use_pseudo and pseudo is not None
        else None
    )

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        logits, _ = forward(m, batch.inputs, state.device)
        loss = F.cross_entropy(logits, label_t[batch.index].to(state.device))
        if pseudo_batches is not None and pseudo is not None:
            pb = next(pseudo_batches)
            p_logits, _ = forward(m, pb.inputs, state.device)
            target = torch.from_numpy(pseudo.targets[pb.index]).to(state.device)
            weight = torch.from_numpy(pseudo.weights[pb.index]).to(state.device)
            per_row = soft_cross_entropy(p_logits, target)
            loss = loss + pseudo_weight * (per_row * weight).sum() / weight.sum().clamp_min(1e-8)
        return loss

    def checkpoint(step: int) -> None:
        state.reporter.checkpoint()
        if step % 10 == 0 and total:
            lo, hi = progress
            state.reporter.progress(lo + (hi - lo) * step / total)

    result = fit(
        model,
        batches=epoch_batches(features, cfg.batch_size, state.pad_id, seed),
        loss_fn=loss_fn,
        total_steps=total,
        learning_rate=cfg.learning_rate,
        eval_every=cfg.eval_every_steps,
        evaluate=lambda: validation_metrics(state, model)["accuracy"],
        deadline=deadline,
        checkpoint=checkpoint,
    )
    if result.stopped_by_deadline:
        state.note_deadline("teacher training", f"{result.steps} of {total} planned steps")
    return result
