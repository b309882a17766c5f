"""The contract is importable without torch: the API process and the worker read it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_the_contract_imports_without_torch() -> None:
    code = (
        "import sys\n"
        "import sec_engine.artifact_contract\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
