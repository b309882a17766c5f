"""Pure model-compression ops for AIP (adaptive iterative pruning) and SQD (quantization +
distillation). Stages and the training loop live elsewhere and call these functions.

Modules:

- :mod:`.gates` — head / FFN-neuron masks applied without changing shapes.
- :mod:`.aip_ops` — Taylor and magnitude importance, selection, physical structured
  pruning, the group-sparsity penalty (R_model's differentiable part).
- :mod:`.sparse` — unstructured magnitude pruning and sparse (bitmap) safetensors storage.
- :mod:`.hf_save` — save a pruned model so plain ``from_pretrained`` loads it.
- :mod:`.sqd_ops` — layer-dropped student, logit and hidden-state distillation losses.
- :mod:`.qat` — int8 fake-quantization (QAT) with a straight-through estimator.
- :mod:`.vocab` — vocabulary pruning and id remapping (tokenizer rewrite for WordPiece).

Everything works on CPU and CUDA and touches no device at import time.
"""

from sec_engine.compression.aip_ops import (
    PruneReport,
    group_sparsity_penalty,
    magnitude_importance,
    prune_structured,
    select_structures,
    state_dict_nbytes,
    taylor_importance,
)
from sec_engine.compression.gates import (
    StructuredMasks,
    StructuredScores,
    attach_masks,
    attached_masks,
    detach_masks,
)
from sec_engine.compression.hf_save import save_pruned_pretrained
from sec_engine.compression.qat import FakeQuantLinear, prepare_qat, strip_qat
from sec_engine.compression.sparse import (
    SparseSaveReport,
    WeightMasks,
    apply_weight_masks,
    keep_masked_weights_zero,
    load_sparse_safetensors,
    magnitude_prune,
    prunable_weights,
    save_sparse_safetensors,
    weight_sparsity,
)
from sec_engine.compression.sqd_ops import (
    LayerMap,
    Strategy,
    hidden_state_loss,
    kd_logit_loss,
    make_hidden_projection,
    make_student,
    student_layer_indices,
)
from sec_engine.compression.vocab import (
    VocabMap,
    prune_vocabulary,
    remap_input_ids,
    write_pruned_tokenizer,
)

__all__ = [
    "FakeQuantLinear",
    "LayerMap",
    "PruneReport",
    "SparseSaveReport",
    "Strategy",
    "StructuredMasks",
    "StructuredScores",
    "VocabMap",
    "WeightMasks",
    "apply_weight_masks",
    "attach_masks",
    "attached_masks",
    "detach_masks",
    "group_sparsity_penalty",
    "hidden_state_loss",
    "kd_logit_loss",
    "keep_masked_weights_zero",
    "load_sparse_safetensors",
    "magnitude_importance",
    "magnitude_prune",
    "make_hidden_projection",
    "make_student",
    "prepare_qat",
    "prunable_weights",
    "prune_structured",
    "prune_vocabulary",
    "remap_input_ids",
    "save_pruned_pretrained",
    "save_sparse_safetensors",
    "select_structures",
    "state_dict_nbytes",
    "strip_qat",
    "student_layer_indices",
    "taylor_importance",
    "weight_sparsity",
    "write_pruned_tokenizer",
]
