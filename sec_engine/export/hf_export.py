"""The HF-format copy of a (possibly pruned) model, loadable with plain `from_pretrained`.

Delegates to `sec_engine.compression.hf_save`, which expresses the structure in config.json
where transformers can, and zero-pads pruned heads / uneven FFN widths where it cannot
(docs/DESIGN_NOTES.md, library constraints); the returned dict says which, for the manifest. The tokenizer is written
alongside unless the caller already wrote a rewritten one (vocabulary pruning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from sec_engine.compression.hf_save import save_pruned_pretrained


def save_hf_model(model: nn.Module, tokenizer: Any | None, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_pruned_pretrained(model.cpu().eval(), out_dir, tokenizer=tokenizer)
