"""PyTorch dynamic int8 quantization (the other CPU int8 route, measured against ONNX Runtime).

`torch.ao.quantization.quantize_dynamic` is deprecated in favour of torchao but still works in
torch 2.13 and needs no extra package; the deprecation warning is silenced here only.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_torch_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with every nn.Linear replaced by a dynamic int8 Linear (CPU only)."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear}, dtype=torch.qint8
        )
    return quantized
