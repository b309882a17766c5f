"""The frozen teacher's outputs on the labelled rows, computed once for the compression loop.

Distillation needs the teacher's logits (and hidden states, for SQD's hidden-state loss, and
one layer's query/key/value projections, for its attention-relation loss) on every labelled
batch. The teacher is frozen and in eval mode during compression, so a row's
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

from sec_engine.compression.relations import QKV, capture_qkv_if, qkv_tuple
from sec_engine.data.encoding import Features, iter_batches
from sec_engine.training import forward

MAX_BYTES = 2 * 1024**3
INFER_BATCH = 64


class TeacherCache:
    def __init__(
        self,
        logits: torch.Tensor,
        hidden: list[torch.Tensor] | None,
        qkv: list[torch.Tensor] | None = None,
    ) -> None:
        self.logits = logits  # (rows, labels) fp32
        self.hidden = hidden  # per row: (states, length, width) fp16
        self.qkv = qkv  # per row: (3, length, projection width) fp16

    @staticmethod
    def estimate_bytes(
        teacher: nn.Module, features: Sequence[Features], hidden: bool, qkv: bool = False
    ) -> int:
        config = getattr(teacher, "config", None)
        layers = int(getattr(config, "num_hidden_layers", 12))
        states = (layers + 1 if hidden else 0) + (3 if qkv else 0)
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
        qkv_layer: int | None = None,
    ) -> TeacherCache | None:
        """The teacher's outputs on `features` (with encoder layer `qkv_layer`'s projections
        when given), or None when they would not fit MAX_BYTES."""
        if cls.estimate_bytes(teacher, features, hidden, qkv_layer is not None) > MAX_BYTES:
            return None
        teacher.eval()
        logits = torch.zeros(len(features), _num_labels(teacher))
        rows: list[torch.Tensor | None] = [None] * len(features)
        qkv_rows: list[torch.Tensor | None] = [None] * len(features)
        with torch.no_grad(), capture_qkv_if(teacher, qkv_layer) as captured:
            for batch in iter_batches(features, INFER_BATCH, pad, by_length=True):
                out_logits, out_hidden = forward(
                    teacher, batch.inputs, device, hidden_states=hidden
                )
                logits[batch.index] = out_logits.cpu()
                lengths = [len(features[i]["input_ids"]) for i in batch.index]
                if out_hidden is not None:
                    _store(rows, torch.stack(out_hidden, dim=1), batch.index, lengths)
                if captured is not None:
                    _store(qkv_rows, torch.stack(qkv_tuple(captured), dim=1), batch.index, lengths)
        hidden_rows = [r for r in rows if r is not None] if hidden else None
        qkv_list = [r for r in qkv_rows if r is not None] if qkv_layer is not None else None
        return cls(logits, hidden_rows, qkv_list)

    def batch(
        self, index: Sequence[int], width: int, device: torch.device
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Logits and hidden states (one tensor per state, padded to `width`) for `index`."""
        logits = self.logits[list(index)].to(device)
        if self.hidden is None:
            return logits, None
        return logits, _padded(self.hidden, index, width, device)

    def qkv_batch(self, index: Sequence[int], width: int, device: torch.device) -> QKV | None:
        """The cached query, key and value projections for `index`, padded to `width`."""
        if self.qkv is None:
            return None
        q, k, v = _padded(self.qkv, index, width, device)
        return q, k, v


def _store(
    rows: list[torch.Tensor | None], stacked: torch.Tensor, index: Sequence[int], lengths: list[int]
) -> None:
    """Row i of the batch, (items, tokens, width), unpadded and in fp16, into rows[index[i]]."""
    half = stacked.to("cpu", torch.float16)
    for j, (i, length) in enumerate(zip(index, lengths, strict=True)):
        rows[i] = half[j, :, :length].clone()


def _padded(
    rows: list[torch.Tensor], index: Sequence[int], width: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """One (batch, width, dim) fp32 tensor per item of the stored rows, zeros past a row's end."""
    first = rows[index[0]]
    out = torch.zeros(len(index), first.shape[0], width, first.shape[2])
    for j, i in enumerate(index):
        row = rows[i]
        out[j, :, : row.shape[1]] = row.float()
    return tuple(out.to(device).unbind(dim=1))


def _num_labels(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "num_labels", 2))
