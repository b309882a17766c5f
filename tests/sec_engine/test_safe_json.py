"""JSON with a nesting limit: deep input is a clear error, never a RecursionError."""

from __future__ import annotations

import json

import pytest

from sec_engine import safe_json

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),  # brackets inside a string do not count
        ('{"a": "\\"[[", "b": [1, [2]]}', 3),  # nor after an escaped quote
        ("[[], [[]], {}]", 3),
        ('{"a\\\\": [{"b": "]]]"}]}', 3),  # an escaped backslash ends before the quote
    ],
)
def test_nesting_depth_counts_structure_only(text: str, depth: int) -> None:
    assert safe_json.nesting_depth(text) == depth
    json.loads(text)  # every case is valid JSON


def test_deep_json_is_refused_before_parsing() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(safe_json.JSONTooDeep, match="nested too deeply"):
        safe_json.loads(deep)
    with pytest.raises(safe_json.JSONTooDeep):
        safe_json.loads(deep.encode())
    limit = safe_json.MAX_JSON_DEPTH
    assert safe_json.loads("[" * limit + "]" * limit) is not None
    with pytest.raises(safe_json.JSONTooDeep):
        safe_json.loads("[" * (limit + 1) + "]" * (limit + 1))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b"\xff{}", UnicodeDecodeError),
        (b"{", json.JSONDecodeError),
        ("1" * 5000, ValueError),  # an integer literal longer than Python converts
    ],
)
def test_other_bad_input_is_a_value_error(bad: str | bytes, error: type[ValueError]) -> None:
    assert issubclass(error, ValueError)
    with pytest.raises(error):
        safe_json.loads(bad)
