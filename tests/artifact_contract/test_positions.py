"""The engine and the server agree on the longest input of every model family
the engine accepts, and that length is the one the model really takes.

Each family of `sec_engine.models.supported` is built as a tiny random-init classifier; the
engine's limit (`pipeline._position_limit`, which sizes training and latency batches) and the
server's (`app.serving.encoder.max_length_for`, which truncates requests) must both be the
contract's `position_limit`, and a row of exactly that many real tokens must run while one
more must not.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.serving.encoder import max_length_for
from sec_engine.artifact_contract.positions import OFFSET_FAMILIES, position_limit
from sec_engine.models.supported import SUPPORTED_MODEL_TYPES

pytestmark = pytest.mark.unit

POSITIONS = 24
TINY: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": POSITIONS,
    "num_labels": 2,
}
# DistilBERT names its sizes its own way; ELECTRA embeds at a size of its own.
FAMILY_ARGS: dict[str, dict[str, Any]] = {
    "distilbert": {"dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 32},
    "electra": {"embedding_size": 16},
}
# Non-default padding indices: the RoBERTa families follow the config's, MPNet keeps its own.
PAD_CASES = [(family, None) for family in sorted(SUPPORTED_MODEL_TYPES)] + [
    ("roberta", 3),
    ("xlm-roberta", 0),
    ("mpnet", 0),
]


def _tiny_model(model_type: str, pad_token_id: int | None) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs = {**TINY, **FAMILY_ARGS.get(model_type, {})}
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **kwargs)
    auto: Any = AutoModelForSequenceClassification  # from_config is untyped
    return auto.from_config(config).eval()


def _runs(model: Any, length: int) -> bool:
    """Whether a row of `length` real (non-padding) tokens goes through the model."""
    import torch

    pad = model.config.pad_token_id
    token = next(i for i in range(5, 64) if i != pad)
    ids = torch.full((1, length), token, dtype=torch.long)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except (IndexError, RuntimeError):
        return False
    return True


@pytest.mark.parametrize(("model_type", "pad_token_id"), PAD_CASES)
def test_engine_and_server_use_the_one_rule_and_it_is_the_models_limit(
    model_type: str, pad_token_id: int | None
) -> None:
    from sec_engine.pipeline import _position_limit

    model = _tiny_model(model_type, pad_token_id)
    config = model.config.to_dict()
    limit = position_limit(config)
    assert limit is not None
    assert _position_limit(model) == limit  # the engine
    assert max_length_for(config, {}) == limit  # the server
    assert max_length_for(config, {"model_max_length": limit + 100}) == limit
    assert _runs(model, limit), f"{model_type}: {limit} tokens should fit"
    assert not _runs(model, limit + 1), f"{model_type}: {limit + 1} tokens should not fit"
    offset = POSITIONS - limit
    assert (offset > 0) == (model_type in OFFSET_FAMILIES)


def test_the_offset_families_are_supported_ones() -> None:
    assert OFFSET_FAMILIES <= SUPPORTED_MODEL_TYPES


def test_a_config_without_positions_has_no_limit() -> None:
    assert position_limit({"model_type": "bert"}) is None
    assert position_limit({"model_type": "bert", "max_position_embeddings": True}) is None
    assert position_limit({"model_type": "roberta", "max_position_embeddings": 514}) == 512
