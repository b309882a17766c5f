"""How many tokens a model of a supported family accepts, from its config.json alone.

The engine truncates training and latency inputs with it, the server truncates requests with
it: one rule, so an artifact is never served longer inputs than it was built for, nor shorter.

Absolute position embeddings (BERT, DistilBERT, ELECTRA) hold `max_position_embeddings`
positions. The RoBERTa-derived families number positions from `padding_idx + 1`, so
`padding_idx + 1` of their rows are never used by a real token: 514 rows hold 512 positions
for RoBERTa (padding_idx = pad_token_id = 1). MPNet does the same with a padding index that
transformers fixes at 1, whatever the config's pad_token_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Families whose padding index is the config's pad_token_id (1 when the config states none,
# their default).
_PADDING_INDEX_FROM_CONFIG = frozenset({"roberta", "xlm-roberta", "camembert"})
# Families whose padding index transformers hard-codes (MPNetEmbeddings.padding_idx).
_FIXED_PADDING_INDEX = {"mpnet": 1}
OFFSET_FAMILIES = _PADDING_INDEX_FROM_CONFIG | frozenset(_FIXED_PADDING_INDEX)


def position_limit(config: Mapping[str, Any]) -> int | None:
    """The most tokens (special tokens included) the position embeddings can number, or None
    when the config states no `max_position_embeddings`."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    model_type = config.get("model_type")
    if model_type in _FIXED_PADDING_INDEX:
        positions -= _FIXED_PADDING_INDEX[model_type] + 1
    elif model_type in _PADDING_INDEX_FROM_CONFIG:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) and not isinstance(pad, bool) else 1) + 1
    return positions if positions > 0 else None
