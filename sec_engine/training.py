"""Training and inference primitives shared by the teacher, TAL and the compression loop.

Kept deliberately small: one optimiser recipe (AdamW + linear warm-up/decay), one fit loop that
evaluates every `eval_every_steps`, keeps the best validation state and stops at its deadline,
and batched inference that pads to the longest row. CUDA runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.data.encoding import Batch, Features, iter_batches, length_grouped_batches


@dataclass
class Deadline:
    """A wall-clock budget. `sub` carves a phase budget out of what is left."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def sub(self, fraction_of_remaining: float) -> Deadline:
        return Deadline(self.remaining() * fraction_of_remaining)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


def forward(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    device: torch.device,
    *,
    hidden_states: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Logits in fp32 (and hidden states when asked), whatever the autocast dtype."""
    with autocast(device):
        out = model(**to_device(inputs, device), output_hidden_states=hidden_states)
    hidden = tuple(h.float() for h in out.hidden_states) if hidden_states else None
    return out.logits.float(), hidden


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    features: Sequence[Features],
    batch_size: int,
    pad: int,
    device: torch.device,
) -> np.ndarray:
    """Logits for every row, in input order (length-sorted batches, so little padding)."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(features), _num_labels(model)), dtype=np.float32)
    for batch in iter_batches(features, batch_size * 2, pad, by_length=True):
        logits, _ = forward(model, batch.inputs, device)
        out[batch.index] = logits.cpu().numpy()
    model.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _num_labels(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "num_labels", 2))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability vector per row (soft labels), one value per row:
    the caller weights the rows and reduces."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def make_optimizer(
    model: nn.Module,
    learning_rate: float,
    total_steps: int,
    *,
    extra_params: Sequence[nn.Parameter] = (),
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW without decay on biases / norms, 6% linear warm-up then linear decay."""
    decay: list[nn.Parameter] = list(extra_params)
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    warmup = max(1, int(0.06 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_batches(
    features: Sequence[Features], batch_size: int, pad: int, seed: int
) -> Iterator[Batch]:
    """An endless stream of shuffled, length-grouped batches, reshuffled every epoch with a
    derived seed (see `length_grouped_batches`: same rows per epoch, far less padding)."""
    epoch = 0
    while True:
        rng = np.random.default_rng([seed, epoch])
        yield from length_grouped_batches(features, batch_size, pad, rng)
        epoch += 1


def steps_for(n_rows: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(n_rows / batch_size * epochs)) if n_rows and epochs > 0 else 0


@dataclass
class FitResult:
    steps: int
    best_accuracy: float
    best_step: int
    stopped_by_deadline: bool
    history: list[tuple[int, float]] = field(default_factory=list)


LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def fit(
    model: nn.Module,
    *,
    batches: Iterator[Batch],
    loss_fn: LossFn,
    total_steps: int,
    learning_rate: float,
    eval_every: int,
    evaluate: Callable[[], float],
    deadline: Deadline,
    checkpoint: Callable[[int], None],
) -> FitResult:
    """Train for `total_steps`, evaluating every `eval_every`; restore the best state at the end.

    `checkpoint(step)` runs before each step (cancellation, progress). When the deadline
    passes the loop stops early, and the best evaluated state is kept (the job ends with the
    best model so far, never with nothing).
    """
    optimizer, scheduler = make_optimizer(model, learning_rate, total_steps)
    best_acc = evaluate() if total_steps else -1.0
    best_state = copy.deepcopy(model.state_dict())
    best_step = 0
    history = [(0, best_acc)]
    step = 0
    stopped = False
    model.train()
    for step in range(1, total_steps + 1):
        checkpoint(step)
        if deadline.expired():
            stopped = True
            step -= 1
            break
        loss = loss_fn(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % eval_every == 0 or step == total_steps:
            acc = evaluate()
            history.append((step, acc))
            if acc > best_acc:
                best_acc, best_step = acc, step
                best_state = copy.deepcopy(model.state_dict())
            model.train()
    if stopped and history[-1][0] != step and step > 0:
        acc = evaluate()
        history.append((step, acc))
        if acc > best_acc:
            best_acc, best_step = acc, step
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(step, best_acc, best_step, stopped, history)
