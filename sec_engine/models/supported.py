"""The `model_type`s the engine accepts, in one torch-free list.

`sec_engine.models.arch` recognises encoders by their module layout (the BERT, DistilBERT and
MPNet families); these are the Hugging Face model types built with those layouts. Torch-free
so that the API (`app.models.inspect`) refuses any other type when a model is uploaded, with
the same list that `sec_engine.models.registry.check_config` applies when a job loads one.
A type outside the list would need code we do not run, or would fail mid-job.
"""

from __future__ import annotations

SUPPORTED_MODEL_TYPES: frozenset[str] = frozenset(
    {"bert", "camembert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta"}
)


def supported_model_types_text() -> str:
    """The list as a user-facing string: "bert, camembert, ..."."""
    return ", ".join(sorted(SUPPORTED_MODEL_TYPES))
