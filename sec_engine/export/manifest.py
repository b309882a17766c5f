"""What the engine adds to a manifest besides its measurements: the library versions.

The manifest itself (its model, checksums and writing) is the artifact contract's
(`sec_engine.artifact_contract.manifest`).
"""

from __future__ import annotations

import importlib.metadata
import platform

# Re-exported: the pipeline clears a previous run's manifest by this name.
from sec_engine.artifact_contract.layout import MANIFEST_NAME as MANIFEST_NAME

_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "onnx", "onnxruntime", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
