"""The compression loop's cache of the frozen teacher's outputs equals a fresh forward."""

from __future__ import annotations

import pytest
import torch

from sec_engine.compression.relations import capture_qkv, qkv_tuple
from sec_engine.data.encoding import collate
from sec_engine.stages import teacher_cache
from sec_engine.stages.teacher_cache import TeacherCache
from sec_engine.training import forward

from .compression.tiny_models import ARCHS, build_tiny

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")


def _features(arch: str, n: int = 12) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 3 + i % 7
        ids = [1, *torch.randint(5, 99, (length - 2,), generator=gen).tolist(), 2]
        row = {"input_ids": ids, "attention_mask": [1] * length}
        if arch == "bert":
            row["token_type_ids"] = [0] * length
        rows.append(row)
    return rows


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_outputs_match_a_forward_on_any_batch(arch: str) -> None:
    model = build_tiny(arch).eval()
    feats = _features(arch)
    cache = TeacherCache.build(model, feats, hidden=True, pad=0, device=CPU)
    assert cache is not None
    index = [7, 0, 11, 3]  # a training batch, padded to its longest row
    inputs = collate([feats[i] for i in index], 0)
    width = int(inputs["input_ids"].shape[1])
    with torch.no_grad():
        logits, hidden = forward(model, inputs, CPU, hidden_states=True)
    c_logits, c_hidden = cache.batch(index, width, CPU)
    torch.testing.assert_close(c_logits, logits, atol=1e-4, rtol=1e-4)
    assert hidden is not None
    assert c_hidden is not None
    assert len(c_hidden) == len(hidden)
    mask = inputs["attention_mask"].bool()
    for cached, fresh in zip(c_hidden, hidden, strict=True):
        assert cached.shape == fresh.shape
        torch.testing.assert_close(cached[mask], fresh[mask], atol=2e-2, rtol=1e-2)  # fp16
        assert torch.count_nonzero(cached[~mask]) == 0


def test_logits_only_and_the_memory_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny("bert").eval()
    feats = _features("bert")
    cache = TeacherCache.build(model, feats, hidden=False, pad=0, device=CPU)
    assert cache is not None
    logits, hidden = cache.batch([1, 2], 9, CPU)
    assert hidden is None
    assert logits.shape == (2, 3)
    monkeypatch.setattr(teacher_cache, "MAX_BYTES", 10)
    assert TeacherCache.build(model, feats, hidden=True, pad=0, device=CPU) is None


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_cached_projections_match_a_capture(arch: str) -> None:
    model = build_tiny(arch).eval()
    feats = _features(arch)
    cache = TeacherCache.build(model, feats, hidden=False, pad=0, device=CPU, qkv_layer=2)
    assert cache is not None
    index = [5, 9, 2]
    inputs = collate([feats[i] for i in index], 0)
    width = int(inputs["input_ids"].shape[1])
    with torch.no_grad(), capture_qkv(model, 2) as captured:
        model(**inputs)
    cached = cache.qkv_batch(index, width, CPU)
    assert cached is not None
    mask = inputs["attention_mask"].bool()
    for c, fresh in zip(cached, qkv_tuple(captured), strict=True):
        assert c.shape == fresh.shape
        torch.testing.assert_close(c[mask], fresh[mask], atol=2e-2, rtol=1e-2)  # fp16
        assert torch.count_nonzero(c[~mask]) == 0
    no_qkv = TeacherCache.build(model, feats, hidden=False, pad=0, device=CPU)
    assert no_qkv is not None
    assert no_qkv.qkv_batch(index, width, CPU) is None
