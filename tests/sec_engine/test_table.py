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


def test_deeply_nested_jsonl_line_is_refused_with_its_line() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    data = b'{"text": "good", "label": "a"}\n{"text": "x", "label": "b", "x": ' + deep + b"}\n"
    with pytest.raises(DatasetError) as info:
        read_table(data, "jsonl")
    assert "line 2: nested too deeply" in info.value.message


def test_an_integer_too_long_to_convert_is_invalid_json_not_a_crash() -> None:
    data = b'{"text": "good", "label": ' + b"1" * 5000 + b"}\n"
    with pytest.raises(DatasetError, match="line 1: not valid JSON"):
        read_table(data, "jsonl")


@pytest.mark.parametrize(
    ("data", "fmt", "needle"),
    [
        (b"text,label\ngood,a\nba\x00d,b\n", "csv", "line 3: column 'text' contains a NUL"),
        (b"text,text_pair,label\na,b\x00,x\nc,d,y\n", "csv", "line 2: column 'text_pair'"),
        (b'{"text": "ok", "label": "a\\u0000"}\n', "jsonl", "line 1: column 'label'"),
        (b'{"text": "ok", "label": "a", "k\\u0000": 1}\n', "jsonl", "column name contains a NUL"),
    ],
)
def test_nul_bytes_are_refused(data: bytes, fmt: str, needle: str) -> None:
    with pytest.raises(DatasetError) as info:
        read_table(data, fmt, require_labels=False)  # type: ignore[arg-type]
    assert needle in info.value.message


def test_unknown_columns_are_listed_as_ignored() -> None:
    table = read_table(b"text,label,source\ngood,a,web\nbad,b,web\n", "csv")
    assert table.ignored_columns == ["source"]
    assert table.summary()["ignored_columns"] == ["source"]
    assert any("ignored" in p and "'source'" in p for p in table.problems)
    assert read_table(b"text,label\ngood,a\nbad,b\n", "csv").summary()["ignored_columns"] == []


def test_the_ignored_columns_list_is_capped() -> None:
    lines = [f'{{"text": "t{i}", "label": "{i % 2}", "k{i:03d}": 1}}' for i in range(40)]
    table = read_table("\n".join(lines).encode(), "jsonl")
    assert len(table.ignored_columns) == 20
    assert any("40 column(s) ignored" in p and "and 20 more" in p for p in table.problems)
