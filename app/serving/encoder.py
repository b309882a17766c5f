"""Tokenization for serving, with the `tokenizers` library only (no transformers import).

The artifact's `tokenizer.json` is the tokenizer `transformers` itself runs (its "fast"
backend), so `Tokenizer.from_file` gives the same ids, special tokens and pair type ids as
`AutoTokenizer.from_pretrained(model/)`. What `transformers` adds on top comes from
`tokenizer_config.json` and `config.json`, and is reproduced here: truncation to the model's
maximum length (longest-first for pairs) and the padding token. Padding is ours: to the
longest sequence of the batch, never to the maximum length (docs/DESIGN_NOTES.md, library constraints: fewer FLOPs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from app.serving.errors import ModelLoadError
from sec_engine.artifact_contract import position_limit

# A text, or a (text, text_pair) for sentence-pair tasks.
TextInput = str | tuple[str, str]

# transformers' "no limit" sentinel for model_max_length is int(1e30).
_NO_LIMIT = 1_000_000


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name} is not a JSON object")
    return data


def max_length_for(config: Mapping[str, Any], tokenizer_config: Mapping[str, Any]) -> int:
    """The longest sequence the model accepts: the tokenizer's model_max_length, bounded by
    the position embeddings of the model (the engine's rule, from the artifact contract)."""
    limits: list[int] = []
    declared = tokenizer_config.get("model_max_length")
    if isinstance(declared, int | float) and 0 < declared < _NO_LIMIT:
        limits.append(int(declared))
    positions = position_limit(config)
    if positions is not None:
        limits.append(positions)
    if not limits:
        raise ModelLoadError("cannot tell the model's maximum sequence length from its config")
    return min(limits)


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class TextEncoder:
    """Turns a batch of inputs into the ONNX model's int64 input arrays."""

    def __init__(
        self, tokenizer: Tokenizer, *, max_length: int, pad_id: int, input_names: Sequence[str]
    ) -> None:
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self.input_names = tuple(input_names)

    @classmethod
    def from_dir(cls, model_dir: Path, input_names: Sequence[str]) -> TextEncoder:
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError("the artifact has no tokenizer.json in its model folder")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception
            raise ModelLoadError(f"cannot read tokenizer.json: {exc}") from exc
        config = read_json(model_dir / "config.json")
        tok_config = read_json(model_dir / "tokenizer_config.json")
        pad_id: int | None = None
        pad_token = _token_text(tok_config.get("pad_token"))
        if pad_token is not None:
            pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            configured = config.get("pad_token_id")
            pad_id = configured if isinstance(configured, int) else 0
        return cls(
            tokenizer,
            max_length=max_length_for(config, tok_config),
            pad_id=pad_id,
            input_names=input_names,
        )

    def encode(self, inputs: Sequence[TextInput]) -> dict[str, npt.NDArray[np.int64]]:
        return self.pad(self.tokenize(inputs))

    def tokenize(self, inputs: Sequence[TextInput]) -> list[Encoding]:
        return list(self.tokenizer.encode_batch(list(inputs), add_special_tokens=True))

    def pad(self, encodings: Sequence[Encoding]) -> dict[str, npt.NDArray[np.int64]]:
        """The model's input arrays, padded to the longest of `encodings`."""
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        types = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in self.input_names}
