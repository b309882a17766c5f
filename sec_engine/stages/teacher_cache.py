"""The frozen teacher's outputs on the labelled rows, computed once for the compression loop.

Distillation needs the teacher's logits (and hidden states, for SQD's hidden-state loss) on
every labelled batch. The teacher is frozen and in eval mode during compression, so a row's
outputs never change; computing them once instead of on every step saves one teacher forward
per step, about a third of a small student's step on a CPU. Rows are stored unpadded (fp16
hidden states) and padded per batch; positions past a row's length are zeros, which the
hidden-state loss masks out with the attention mask.

The cache is skipped (outputs computed per step, as before) when it would take more memory
than `MAX_BYTES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sec_engine.data.encoding import Features, iter_batches
from sec_engine.training import forward

MAX_BYTES = 2 * 1024**3
INFER_BATCH = 64


class TeacherCache:
    def __init__(self, logits: torch.Tensor, hidden: list[torch.Tensor] | None) -> None:
        self.logits = logits  # (rows, labels) fp32
        self.hidden = hidden  # per row: (states, length, width) fp16

    @staticmethod
    def estimate_bytes(teacher: nn.Module, features: Sequence[Features], hidden: bool) -> int:
        if not hidden:
            return 0
        config = getattr(teacher, "config", None)
        states = int(getattr(config, "num_hidden_layers", 12)) + 1
        width = int(getattr(config, "hidden_size", 768))
        tokens = sum(len(f["input_ids"]) for f in features)
        return tokens * states * width * 2

    @classmethod
    def build(
        cls,
        teacher: nn.Module,
        features: Sequence[Features],
        *,
        hidden: bool,
        pad: int,
        device: torch.device,
    ) -> TeacherCache | None:
        """The teacher's outputs on `features`, or None when they would not fit MAX_BYTES."""
        if cls.estimate_bytes(teacher, features, hidden) > MAX_BYTES:
            return None
        teacher.eval()
        logits = torch.zeros(len(features), _num_labels(teacher))
        rows: list[torch.Tensor | None] = [None] * len(features)
        with torch.no_grad():
            for batch in iter_batches(features, INFER_BATCH, pad, by_length=True):
                out_logits, out_hidden = forward(
                    teacher, batch.inputs, device, hidden_states=hidden
                )
                logits[batch.index] = out_logits.cpu()
                if out_hidden is not None:
                    stacked = torch.stack(out_hidden, dim=1).to("cpu", torch.float16)
                    for j, i in enumerate(batch.index):
                        length = len(features[i]["input_ids"])
                        rows[i] = stacked[j, :, :length].clone()
        hidden_rows = [r for r in rows if r is not None] if hidden else None
        return cls(logits, hidden_rows)

    def batch(
        self, index: Sequence[int], width: int, device: torch.device
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Logits and hidden states (one tensor per state, padded to `width`) for `index`."""
        logits = self.logits[list(index)].to(device)
        if self.hidden is None:
            return logits, None
        first = self.hidden[index[0]]
        out = torch.zeros(len(index), first.shape[0], width, first.shape[2])
        for j, i in enumerate(index):
            row = self.hidden[i]
            out[j, :, : row.shape[1]] = row.float()
        states = out.to(device).unbind(dim=1)
        return logits, tuple(states)


def _num_labels(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "num_labels", 2))
