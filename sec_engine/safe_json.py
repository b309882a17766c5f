"""Parsing untrusted JSON with a nesting limit, so hostile input is an error, not a crash.

The stdlib parser recurses once per `[` or `{`: a line of 100,000 brackets raises
RecursionError (and anything that walks the result recursively would too). `loads` counts the
nesting on the raw text first (strings removed, so brackets inside them do not count) and
refuses anything deeper than the limit before the parser sees it: deterministic, and the same
on every Python build, unlike the recursion limit. Torch-free: the API uses it for uploads.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Datasets rows, HF configs, tokenizer files and safetensors headers are at most a handful of
# levels deep (tokenizer.json: about 6). 64 leaves room for any real file and stays far below
# Python's recursion limit (1000), so neither the parser nor a recursive walk of the result
# (looking for `auto_map`, say) can overflow.
MAX_JSON_DEPTH = 64

# A JSON string (escapes included), then anything that is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JSONTooDeep(ValueError):
    """The JSON text nests arrays / objects deeper than the limit."""


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """How deep the text's arrays and objects nest (0 for a scalar). For invalid JSON this is
    an upper bound of what a parser reaches before it fails. Stops counting once the depth
    passes `stop_above`."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and depth > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that first refuses text nested deeper than `max_depth`.

    Raises JSONTooDeep, json.JSONDecodeError, UnicodeDecodeError (bytes that are not UTF-8) or
    ValueError (an integer literal longer than Python converts): all ValueErrors.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if nesting_depth(text, stop_above=max_depth) > max_depth:
        raise JSONTooDeep(f"nested too deeply (more than {max_depth} levels of arrays / objects)")
    return json.loads(text)
