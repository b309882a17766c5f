"""The README's Python example stays valid: it parses, and every `sec.<method>` it calls and
every name it imports exists in `sec_client` (the CLI tour itself runs in tests/e2e)."""

from __future__ import annotations

import ast
import re

import pytest

import sec_client
from sec_client import SecClient
from tests.integration.flow import REPO_ROOT

pytestmark = pytest.mark.unit


def test_readme_python_example_matches_the_client() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "sec_client" in b]
    assert blocks, "README.md has no Python example using sec_client"
    tree = ast.parse(blocks[0])
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "sec_client"
        for alias in node.names
    }
    assert imported, "the example imports nothing from sec_client"
    for name in imported:
        assert hasattr(sec_client, name), name
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "sec"
    }
    assert {"upload_dataset", "plan", "submit_job", "wait_for_job", "deploy", "predict"} <= called
    for method in called:
        assert callable(getattr(SecClient, method, None)), method
