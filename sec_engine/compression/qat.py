"""Int8 quantization-aware training: fake-quantized Linears with a straight-through estimator.

Usage::

    n = prepare_qat(model)                    # every nn.Linear now trains through int8 rounding
    optimizer = ...                           # existing optimizers keep working (same params)
    ...train...
    strip_qat(model)                          # plain nn.Linear again, with the trained weights

What is simulated, and why it matches the deliverable: weights are quantized as the export
quantizes them, by one definition both read (:data:`EXPORT_SCHEME`): symmetric int8 with one
scale per output channel, in ONNX Runtime's reduced range [-64, 64]. Training against a finer
grid than the export uses lets the weights rely on precision they will not have: on MiniLM +
Rotten Tomatoes that mismatch cost 0.8 test accuracy points at export. Why this scheme, measured
on the all-label MiniLM teacher (validation + test, 2,550 rows, post-training quantization, no
QAT; ``python -m bench.int8_schemes``, ``bench/results/int8_schemes.md``): one scale per
tensor lost 1.02 points, per channel 0.23, per channel in the reduced range 0.47; an earlier
evaluation of the same files at another batch size gave 0.98, 0.51 and 0.20 (dynamic
activation ranges follow the batch), so the two per-channel schemes tie and both halve the
per-tensor loss. The reduced range is kept because x86 CPUs without VNNI (this one)
multiply uint8 activations by int8 weights with an instruction (VPMADDUBSW) whose
16-bit sums saturate; 7-bit weights keep them in range. Activations
(``quantize_activations=True``) are quantized as the export quantizes them at inference:
symmetric int8 with one scale per token from that token's own range (``export.per_token``),
or, for a scheme without per-token scales, asymmetric uint8 over the whole tensor. Rounding has no useful gradient, so
the backward pass treats it as identity (straight-through estimator, Bengio et al. 2013).

A small custom STE instead of ``torch.ao.quantization.FakeQuantize``: that still runs in torch
2.13, but the package warns that it is deprecated (moving to torchao) and slated for removal,
and its observers carry state that would have to be calibrated and saved; this has none.

Conversion swaps each Linear's class in place (``FakeQuantLinear`` adds no parameters or
buffers), so parameter identity, optimizer state, hooks (e.g. pruning gates) and
``state_dict`` keys are all unchanged, and ``strip_qat`` is an exact inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8


@dataclass(frozen=True)
class Int8Scheme:
    """How weights and activations become int8: the export applies it, QAT simulates it
    (one owner)."""

    per_channel: bool
    reduce_range: bool
    # Activations: symmetric int8 with one scale per token (`export.per_token`), or ONNX
    # Runtime's default of one asymmetric uint8 range per tensor, which spans the whole batch.
    per_token_activations: bool = True

    @property
    def qmax(self) -> float:
        """Largest level of the symmetric grid (ONNX Runtime: [-64, 64] reduced, else ±127)."""
        return 64.0 if self.reduce_range else 127.0


EXPORT_SCHEME = Int8Scheme(per_channel=True, reduce_range=True, per_token_activations=True)


def fake_quant_weight(
    weight: torch.Tensor, *, per_channel: bool = False, qmax: float = 127.0
) -> torch.Tensor:
    """Symmetric int8 fake quantization (one scale per tensor, or per output row) onto
    [-qmax, qmax], with a straight-through gradient."""
    w = weight.float()
    a = w.detach().abs()
    peak = a.amax(dim=1, keepdim=True) if per_channel else a.amax()
    scale = (peak / qmax).clamp_min(_EPS)
    q = (w / scale).round().clamp(-qmax, qmax) * scale
    return (w + (q - w).detach()).to(weight.dtype)


def fake_quant_activation(x: torch.Tensor, *, per_token: bool = True) -> torch.Tensor:
    """Dynamic int8 fake quantization of an activation, as the export runs it: symmetric
    with one scale per token (row of the last axis), or asymmetric uint8 over the tensor."""
    xf = x.float()
    if per_token:
        peak = xf.detach().abs().amax(dim=-1, keepdim=True)
        scale = (peak / 127.0).clamp_min(_EPS)
        dq = (xf / scale).round().clamp(-127.0, 127.0) * scale
        return (xf + (dq - xf).detach()).to(x.dtype)
    lo = xf.detach().amin().clamp(max=0.0)  # the range always contains 0, as in ORT
    hi = xf.detach().amax().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(_EPS)
    zero_point = (-lo / scale).round()
    q = ((xf / scale).round() + zero_point).clamp(0.0, 255.0)
    dq = (q - zero_point) * scale
    return (xf + (dq - xf).detach()).to(x.dtype)


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward runs through int8 fake quantization. Made only by class swap
    in :func:`prepare_qat`; ``sec_quantize_activations`` is set there."""

    sec_quantize_activations: bool = False
    sec_per_token: bool = True
    sec_per_channel: bool = False
    sec_qmax: float = 127.0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        if self.sec_quantize_activations:
            x = fake_quant_activation(input, per_token=self.sec_per_token)
        weight = fake_quant_weight(
            self.weight, per_channel=self.sec_per_channel, qmax=self.sec_qmax
        )
        return F.linear(x, weight, self.bias)


def prepare_qat(
    model: nn.Module,
    *,
    quantize_activations: bool = False,
    scheme: Int8Scheme = EXPORT_SCHEME,
    skip: tuple[str, ...] = (),
) -> int:
    """Turn every nn.Linear (except names starting with a prefix in ``skip``) into a
    FakeQuantLinear on `scheme`'s grid, in place; return how many were converted. Idempotent."""
    converted = 0
    for name, module in model.named_modules():
        if type(module) is nn.Linear and not any(name.startswith(s) for s in skip):
            object.__setattr__(module, "__class__", FakeQuantLinear)
            object.__setattr__(module, "sec_quantize_activations", quantize_activations)
            object.__setattr__(module, "sec_per_token", scheme.per_token_activations)
            object.__setattr__(module, "sec_per_channel", scheme.per_channel)
            object.__setattr__(module, "sec_qmax", scheme.qmax)
            converted += 1
    return converted


def strip_qat(model: nn.Module) -> int:
    """Turn every FakeQuantLinear back into nn.Linear with the trained weights, in place."""
    stripped = 0
    for module in model.modules():
        if isinstance(module, FakeQuantLinear):
            module.__dict__.pop("sec_quantize_activations", None)
            module.__dict__.pop("sec_per_token", None)
            module.__dict__.pop("sec_per_channel", None)
            module.__dict__.pop("sec_qmax", None)
            object.__setattr__(module, "__class__", nn.Linear)
            stripped += 1
    return stripped
