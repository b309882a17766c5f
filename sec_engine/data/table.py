"""Reading a labelled text dataset (CSV or JSONL) into rows, with problems named precisely.

Torch-free on purpose: the API validates uploads with the same code the engine trains on, so
a file the upload accepted is a file the engine can read.

Columns: `text` (required), `text_pair` (optional, for sentence-pair tasks), `label`
(optional per row: rows without a label form the unlabelled pool). Labels are kept as
strings; the engine maps them to class ids in sorted order. Other columns are ignored and
listed in the summary (`ignored_columns`). A NUL byte in a cell that is used is refused (a
text with NUL is a binary file or a mistake, and it would be passed on to tokenizers and
stored results as is); JSON nested deeper than `sec_engine.safe_json.MAX_JSON_DEPTH` is
refused with its line.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sec_engine import safe_json
from sec_engine.errors import DatasetError, DatasetTooLarge

Format = Literal["csv", "jsonl"]
MAX_TEXT_CHARS = 20_000
COLUMNS = ("text", "text_pair", "label")
# Ignored columns named in the summary: a JSONL file may have a different key on every line,
# and the summary is stored and returned with the dataset, so the list is capped.
MAX_IGNORED_REPORTED = 20
MAX_COLUMN_NAME_REPORTED = 100


@dataclass(frozen=True)
class Row:
    text: str
    text_pair: str | None
    label: str | None


@dataclass(frozen=True)
class Table:
    rows: list[Row]
    format: Format
    has_pairs: bool
    problems: list[str] = field(default_factory=list)  # warnings that did not stop the load
    ignored_columns: list[str] = field(default_factory=list)  # columns not read (capped)

    @property
    def labelled(self) -> list[Row]:
        return [r for r in self.rows if r.label is not None]

    @property
    def unlabelled(self) -> list[Row]:
        return [r for r in self.rows if r.label is None]

    @property
    def labels(self) -> list[str]:
        return sorted({r.label for r in self.rows if r.label is not None})

    def summary(self) -> dict[str, Any]:
        balance = Counter(r.label for r in self.labelled if r.label is not None)
        return {
            "format": self.format,
            "rows": len(self.rows),
            "labelled_rows": len(self.labelled),
            "unlabelled_rows": len(self.unlabelled),
            "has_pairs": self.has_pairs,
            "labels": self.labels,
            "class_balance": {k: balance[k] for k in sorted(balance)},
            "problems": list(self.problems),
            "ignored_columns": list(self.ignored_columns),
        }


def detect_format(filename: str) -> Format:
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise DatasetError(f"unsupported file type for {filename!r}: use .csv or .jsonl")


def read_table(
    data: bytes,
    fmt: Format,
    *,
    max_rows: int = 1_000_000,
    require_labels: bool = True,
) -> Table:
    """Parse and validate. Raises DatasetError naming the first blocking problem."""
    if not data.strip():
        raise DatasetError("the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"the file is not valid UTF-8 (first bad byte on line {line})") from exc
    records = _parse_csv(text, max_rows) if fmt == "csv" else _parse_jsonl(text, max_rows)
    return _validate(records, fmt, require_labels=require_labels)


def read_table_file(path: Path, **kwargs: Any) -> Table:
    return read_table(path.read_bytes(), detect_format(path.name), **kwargs)


def _parse_csv(text: str, max_rows: int) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if reader.fieldnames is None:
        raise DatasetError("the CSV file has no header row")
    fields = [f.strip() for f in reader.fieldnames]
    if len(set(fields)) != len(fields):
        raise DatasetError(f"the CSV header repeats a column name: {fields}")
    reader.fieldnames = fields
    _require_text_column(fields)
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        for record in reader:
            line = reader.line_num
            if None in record:
                raise DatasetError(f"line {line}: more values than header columns")
            if any(v is None for v in record.values()):
                raise DatasetError(f"line {line}: fewer values than header columns")
            records.append((line, record))
            if len(records) > max_rows:
                raise DatasetTooLarge(f"too many rows: the limit is {max_rows}")
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV near line {reader.line_num}: {exc}") from exc
    return records


def _parse_jsonl(text: str, max_rows: int) -> list[tuple[int, dict[str, Any]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = safe_json.loads(line)
        except safe_json.JSONTooDeep as exc:
            raise DatasetError(f"line {line_no}: {exc}") from exc
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            raise DatasetError(f"line {line_no}: not valid JSON ({msg})") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"line {line_no}: each line must be a JSON object")
        if line_no == 1 or not records:
            _require_text_column(list(obj))
        records.append((line_no, obj))
        if len(records) > max_rows:
            raise DatasetTooLarge(f"too many rows: the limit is {max_rows}")
    return records


def _require_text_column(fields: list[str]) -> None:
    if "text" not in fields:
        raise DatasetError(f"missing required column 'text' (found: {', '.join(fields) or 'none'})")


def _cell(value: Any, line: int, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DatasetError(f"line {line}: column {column!r} must be a string or number")
    s = str(value).strip()
    if "\x00" in s:
        raise DatasetError(f"line {line}: column {column!r} contains a NUL byte (\\x00)")
    return s or None


def _validate(
    records: list[tuple[int, dict[str, Any]]], fmt: Format, *, require_labels: bool
) -> Table:
    if not records:
        raise DatasetError("the file has a header but no rows")
    rows: list[Row] = []
    problems: list[str] = []
    empty_text = 0
    extra: set[str] = set()
    for line, record in records:
        extra.update(k for k in record if k not in COLUMNS)
        if "text" not in record:
            raise DatasetError(f"line {line}: missing required column 'text'")
        text = _cell(record.get("text"), line, "text")
        if text is None:
            empty_text += 1
            continue
        if len(text) > MAX_TEXT_CHARS:
            raise DatasetError(f"line {line}: text is longer than {MAX_TEXT_CHARS} characters")
        pair = _cell(record.get("text_pair"), line, "text_pair")
        label = _cell(record.get("label"), line, "label")
        rows.append(Row(text=text, text_pair=pair, label=label))
    if empty_text:
        problems.append(f"{empty_text} row(s) with empty text were skipped")
    if any("\x00" in c for c in extra):
        raise DatasetError("a column name contains a NUL byte (\\x00)")
    ignored = [c[:MAX_COLUMN_NAME_REPORTED] for c in sorted(extra)[:MAX_IGNORED_REPORTED]]
    if extra:
        more = f" and {len(extra) - len(ignored)} more" if len(extra) > len(ignored) else ""
        problems.append(
            f"{len(extra)} column(s) ignored (only text, text_pair and label are read): "
            + ", ".join(repr(c) for c in ignored)
            + more
        )
    if not rows:
        raise DatasetError("no row has any text")
    has_pairs = any(r.text_pair is not None for r in rows)
    if has_pairs and any(r.text_pair is None for r in rows):
        missing = sum(r.text_pair is None for r in rows)
        raise DatasetError(
            f"{missing} row(s) have no text_pair while others do: a pair task needs it on every row"
        )
    table = Table(
        rows=rows, format=fmt, has_pairs=has_pairs, problems=problems, ignored_columns=ignored
    )
    if require_labels:
        labels = table.labels
        if not labels:
            raise DatasetError(
                "no row has a label: a labelled dataset needs a 'label' column with values"
            )
        if len(labels) < 2:
            raise DatasetError(
                f"the label column has only one class ({labels[0]!r}): classification needs at least 2"
            )
        counts = Counter(r.label for r in table.labelled)
        rare = sorted(k for k, n in counts.items() if k is not None and n < 2)
        if rare:
            problems.append(f"classes with fewer than 2 examples: {rare}")
    return table
