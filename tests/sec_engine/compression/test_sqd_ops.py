from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from sec_engine.compression import (
    hidden_state_loss,
    kd_logit_loss,
    make_hidden_projection,
    make_student,
    student_layer_indices,
)
from sec_engine.models.arch import describe, get_layers

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit


def test_layer_choice_per_strategy() -> None:
    assert student_layer_indices(12, 6, "uniform") == (
        [0, 2, 4, 6, 8, 10],  # DistilBERT: one layer out of two
        {0: 0, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12},
    )
    assert student_layer_indices(6, 4, "uniform")[0] == [0, 1, 3, 4]
    assert student_layer_indices(6, 4, "uniform")[1][4] == 6  # last state <- last state
    assert student_layer_indices(6, 2, "first") == ([0, 1], {0: 0, 1: 1, 2: 2})
    assert student_layer_indices(6, 2, "last") == ([4, 5], {0: 0, 1: 5, 2: 6})
    with pytest.raises(ValueError, match=r"1\.\.6"):
        student_layer_indices(6, 7, "uniform")


def test_student_copies_teacher_layers_and_round_trips(arch: str, tmp_path: Path) -> None:
    teacher = build_tiny(arch, num_layers=4)
    student, layer_map = make_student(teacher, num_layers=2, strategy="uniform")
    assert len(get_layers(teacher)) == 4  # teacher untouched
    assert len(get_layers(student)) == 2
    assert getattr(student.config, describe(student).num_layers_attr) == 2
    t_layers, s_layers = get_layers(teacher), get_layers(student)
    for s_idx, t_idx in ((0, 0), (1, 2)):
        for p_s, p_t in zip(
            s_layers[s_idx].parameters(), t_layers[t_idx].parameters(), strict=True
        ):
            assert torch.equal(p_s, p_t)
            assert p_s.data_ptr() != p_t.data_ptr()  # a copy, not shared storage
    inputs = make_inputs(arch, pair=True)
    with torch.no_grad():
        s_out = student(**inputs, output_hidden_states=True)
        t_out = teacher(**inputs, output_hidden_states=True)
    assert len(s_out.hidden_states) == 3
    assert max(layer_map.values()) == len(t_out.hidden_states) - 1
    torch.testing.assert_close(s_out.hidden_states[0], t_out.hidden_states[0])  # embeddings
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, s_out.logits)


def test_kd_loss_is_scaled_kl_and_reaches_only_the_student() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 3, generator=gen, requires_grad=True)
    student = torch.randn(5, 3, generator=gen, requires_grad=True)
    t = 3.0
    loss = kd_logit_loss(student, teacher, temperature=t)
    p = F.softmax(teacher / t, dim=-1)
    manual = (p * (p.log() - F.log_softmax(student / t, dim=-1))).sum(dim=-1).mean() * t * t
    torch.testing.assert_close(loss, manual)
    torch.autograd.backward(loss)
    assert student.grad is not None
    assert teacher.grad is None
    assert float(kd_logit_loss(teacher, teacher, 2.0).detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        kd_logit_loss(student, teacher, 0.0)


def test_hidden_loss_matches_mapped_layers_and_ignores_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 5, 8, generator=gen) for _ in range(5)]
    student = [teacher[0].clone(), teacher[2].clone(), teacher[4].clone()]
    layer_map = {0: 0, 1: 2, 2: 4}
    assert float(hidden_state_loss(student, teacher, layer_map)) == 0.0
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    student[2][1, 3:] += 5.0  # only padded positions differ
    assert float(hidden_state_loss(student, teacher, layer_map, attention_mask=mask)) == 0.0
    assert float(hidden_state_loss(student, teacher, layer_map)) > 0.0
    student[1] = student[1] + 1.0
    expected = (1.0 + 0.0 + 0.0) / 3
    got = hidden_state_loss(student, teacher, layer_map, attention_mask=mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_hidden_loss_needs_a_projection_when_widths_differ() -> None:
    teacher = [torch.randn(2, 4, 8)]
    student = [torch.randn(2, 4, 6, requires_grad=True)]
    assert make_hidden_projection(8, 8) is None
    with pytest.raises(ValueError, match="projection"):
        hidden_state_loss(student, teacher, {0: 0})
    projection = make_hidden_projection(6, 8)
    assert projection is not None
    torch.autograd.backward(hidden_state_loss(student, teacher, {0: 0}, projection=projection))
    assert projection.weight.grad is not None
