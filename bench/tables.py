"""The suite's pure parts: the result row schema, the Pareto front, ratios and markdown tables.

No torch here: these functions are unit-tested in seconds (tests/bench) and used by the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Row:
    """One model of one table, measured on the shared test split.

    `latency_ms` is the median ms per batch (batch 32, seq 128, fixed threads) from the
    section's interleaved timing rounds; `size_mb` the bytes on disk of exactly the files the
    row's `runtime` loads (`size_files`). Fields that a section does not measure stay None.
    """

    name: str
    section: str
    group: str  # "baseline", "sec-module", "sec", "peer", "data-module", "label-efficiency"
    runtime: str | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    perplexity: float | None = None
    size_mb: float | None = None
    size_files: str | None = None
    latency_ms: float | None = None
    train_seconds: float | None = None
    labels_used: int | None = None
    labels_available: int | None = None
    how: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown row fields: {sorted(unknown)}")
        return cls(**data)


def dominates(a: Row, b: Row) -> bool:
    """a is at least as accurate and as fast as b, and strictly better in one of the two."""
    if None in (a.accuracy, a.latency_ms, b.accuracy, b.latency_ms):
        raise ValueError("dominance needs accuracy and latency on both rows")
    assert a.accuracy is not None
    assert a.latency_ms is not None
    assert b.accuracy is not None
    assert b.latency_ms is not None
    no_worse = a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms
    better = a.accuracy > b.accuracy or a.latency_ms < b.latency_ms
    return no_worse and better


def pareto_front(rows: Sequence[Row]) -> list[Row]:
    """Rows no other row dominates on (accuracy up, latency down), sorted by latency."""
    timed = [r for r in rows if r.accuracy is not None and r.latency_ms is not None]
    front = [r for r in timed if not any(dominates(o, r) for o in timed if o is not r)]
    return sorted(front, key=lambda r: (r.latency_ms or 0.0, -(r.accuracy or 0.0)))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    assert denominator is not None
    return round(numerator / denominator, 3)


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def points_vs(row: Row, baseline: Row) -> float | None:
    """Accuracy difference to the baseline in points (negative = a drop)."""
    if row.accuracy is None or baseline.accuracy is None:
        return None
    return round(100 * (row.accuracy - baseline.accuracy), 2)


def compression_table(rows: Sequence[Row], baseline: Row) -> str:
    """Tables 2-4: size, latency, accuracy, macro-F1, perplexity, with ratios to the baseline."""
    lines = [
        "| model | runtime | size MB | × smaller | ms/batch | × faster | accuracy | Δ acc (pts) "
        "| macro-F1 | perplexity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        drop = points_vs(r, baseline)
        lines.append(
            f"| {r.name} | {_fmt(r.runtime, 0)} | {_fmt(r.size_mb, 2)} "
            f"| {_fmt(ratio(baseline.size_mb, r.size_mb), 2)} | {_fmt(r.latency_ms, 1)} "
            f"| {_fmt(ratio(baseline.latency_ms, r.latency_ms), 2)} | {_fmt(r.accuracy, 4)} "
            f"| {_fmt(drop, 2)} | {_fmt(r.macro_f1, 4)} | {_fmt(r.perplexity, 4)} |"
        )
    return "\n".join(lines)


def training_table(rows: Sequence[Row], baseline: Row) -> str:
    """Table 1: training time (and its ratio to the baseline), accuracy, labels used."""
    lines = [
        "| model | training s | × baseline time | accuracy | Δ acc (pts) | perplexity "
        "| labels used | what was trained |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        drop = points_vs(r, baseline)
        labels = f"{r.labels_used} of {r.labels_available}" if r.labels_used is not None else "–"
        lines.append(
            f"| {r.name} | {_fmt(r.train_seconds, 0)} "
            f"| {_fmt(ratio(r.train_seconds, baseline.train_seconds), 2)} "
            f"| {_fmt(r.accuracy, 4)} | {_fmt(drop, 2)} | {_fmt(r.perplexity, 4)} | {labels} "
            f"| {r.how} |"
        )
    return "\n".join(lines)


def labels_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The smallest label fraction whose accuracy reaches `target` (points: fraction, acc)."""
    reached = [f for f, acc in sorted(points) if acc >= target]
    return reached[0] if reached else None
