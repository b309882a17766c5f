"""The dataset reader: every bad input is refused with a message that names the problem."""

from __future__ import annotations

import pytest

from sec_engine.data.table import detect_format, read_table
from sec_engine.errors import DatasetError

pytestmark = pytest.mark.unit


def test_csv_with_labels_pairs_and_unlabelled_pool() -> None:
    data = b"text,text_pair,label\nA man sleeps,A person rests,entail\nIt rains,It is sunny,contra\nHi,Hello,\n"
    table = read_table(data, "csv")
    assert table.has_pairs
    assert table.labels == ["contra", "entail"]
    assert len(table.labelled) == 2
    assert len(table.unlabelled) == 1
    summary = table.summary()
    assert summary["class_balance"] == {"contra": 1, "entail": 1}
    assert summary["unlabelled_rows"] == 1


def test_jsonl_numbers_as_labels_and_bom() -> None:
    data = b'\xef\xbb\xbf{"text": "good", "label": 1}\n\n{"text": "bad", "label": 0}\n'
    table = read_table(data, "jsonl")
    assert table.labels == ["0", "1"]
    assert not table.has_pairs


def test_empty_texts_are_skipped_and_reported() -> None:
    table = read_table(b"text,label\n,a\ngood,a\nfine,a\nbad,b\nawful,b\n", "csv")
    assert len(table.rows) == 4
    assert table.problems == ["1 row(s) with empty text were skipped"]


@pytest.mark.parametrize(
    ("data", "fmt", "needle"),
    [
        (b"", "csv", "empty"),
        (b"   \n", "jsonl", "empty"),
        (b"sentence,label\nhi,a\n", "csv", "missing required column 'text'"),
        (b"text,label\n", "csv", "no rows"),
        (b"text,label\n\xff\xfe bad,a\n", "csv", "not valid UTF-8 (first bad byte on line 2)"),
        (b'text,label\n"unterminated,a\nok,b\n', "csv", "malformed CSV"),
        (b"text,label\nhi,a,extra\n", "csv", "line 2: more values"),
        (b"text,label\nhi,a\nho,a\n", "csv", "only one class ('a')"),
        (b"text\nhi\nho\n", "csv", "no row has a label"),
        (b'{"text": "hi", "label": "a"}\nnot json\n', "jsonl", "line 2: not valid JSON"),
        (b'["hi", "a"]\n', "jsonl", "must be a JSON object"),
        (b'{"text": {"x": 1}, "label": "a"}\n', "jsonl", "column 'text' must be a string"),
        (b"text,text_pair,label\na,b,x\nc,,y\n", "csv", "no text_pair"),
        (b"text,text,label\na,b,x\n", "csv", "repeats a column"),
    ],
)
def test_bad_inputs_name_the_problem(data: bytes, fmt: str, needle: str) -> None:
    with pytest.raises(DatasetError) as info:
        read_table(data, fmt)  # type: ignore[arg-type]
    assert needle in info.value.message


def test_row_cap() -> None:
    data = b"text,label\n" + b"".join(b"row %d,%d\n" % (i, i % 2) for i in range(20))
    with pytest.raises(DatasetError, match="too many rows: the limit is 10"):
        read_table(data, "csv", max_rows=10)


def test_unlabelled_pool_file_needs_no_labels() -> None:
    table = read_table(b"text\nsome text\nmore text\n", "csv", require_labels=False)
    assert len(table.unlabelled) == 2


def test_detect_format() -> None:
    assert detect_format("Train.CSV") == "csv"
    assert detect_format("x.jsonl") == "jsonl"
    with pytest.raises(DatasetError, match=r"use \.csv or \.jsonl"):
        detect_format("model.pkl")
