"""From the uploaded files to seeded train / validation / test splits and an unlabelled pool.

Choices (the paper leaves them open; docs/DESIGN_NOTES.md):

- Exact duplicates of (text, text_pair) are dropped before splitting, keeping the first, so the
  same snippet can never sit in both train and test (Rotten Tomatoes repeats ~1k snippets).
- Splits are stratified by class with a seeded generator: the same file and seed always give
  the same split, and every class appears in validation and test when it has enough rows.
- The test split is only ever used for the final metrics; validation drives every decision.
- Unlabelled rows (no label) of the training file plus every row of the unlabelled file form
  the unlabelled pool. Labels found in the unlabelled file are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sec_engine.data.table import Row, Table, read_table_file
from sec_engine.errors import DatasetError
from sec_engine.result import ResolvedInputs
from sec_engine.spec import DataSplit


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    label: int | None  # class id; None in the unlabelled pool


@dataclass
class DataBundle:
    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    unlabelled: list[Example]
    has_pairs: bool
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "labels": list(self.labels),
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "unlabelled": len(self.unlabelled),
            "has_pairs": self.has_pairs,
            "problems": list(self.problems),
        }


def _read(path: Path, *, require_labels: bool) -> Table:
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path.name}")
    return read_table_file(path, require_labels=require_labels)


def _dedupe(rows: list[Row], seen: set[tuple[str, str | None]]) -> tuple[list[Row], int]:
    kept: list[Row] = []
    for r in rows:
        key = (r.text, r.text_pair)
        if key in seen:
            continue
        seen.add(key)
        kept.append(r)
    return kept, len(rows) - len(kept)


def stratified_split(
    labels: list[int], fractions: tuple[float, float], seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Indices for (rest, part_a, part_b): part_a/part_b take `fractions` of every class.

    Every class with at least 3 rows keeps one row in `rest`; a class too small to give its
    share gives none rather than all of itself.
    """
    rng = np.random.default_rng(seed)
    rest: list[int] = []
    part_a: list[int] = []
    part_b: list[int] = []
    for cls in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == cls]
        order = [idx[j] for j in rng.permutation(len(idx))]
        n = len(order)
        n_a = round(n * fractions[0]) if n >= 3 else 0
        n_b = round(n * fractions[1]) if n >= 3 else 0
        if n_a + n_b >= n:
            n_a, n_b = min(n_a, max(n - 2, 0)), min(n_b, 1 if n >= 3 else 0)
        part_a += order[:n_a]
        part_b += order[n_a : n_a + n_b]
        rest += order[n_a + n_b :]
    shuffle = rng.permutation
    return (
        [rest[i] for i in shuffle(len(rest))],
        [part_a[i] for i in shuffle(len(part_a))],
        [part_b[i] for i in shuffle(len(part_b))],
    )


def _examples(rows: list[Row], label_ids: dict[str, int]) -> list[Example]:
    return [
        Example(r.text, r.text_pair, None if r.label is None else label_ids[r.label]) for r in rows
    ]


def load_data(inputs: ResolvedInputs, split: DataSplit, seed: int) -> DataBundle:
    """Read the job's files and split them. Raises DatasetError with the reason."""
    train_table = _read(inputs.train_path, require_labels=True)
    problems = list(train_table.problems)
    seen: set[tuple[str, str | None]] = set()
    labelled, dup_train = _dedupe(train_table.labelled, seen)
    labels = train_table.labels
    label_ids = {name: i for i, name in enumerate(labels)}
    has_pairs = train_table.has_pairs

    val_rows: list[Row] | None = None
    if inputs.validation_path is not None:
        val_table = _read(inputs.validation_path, require_labels=True)
        if val_table.has_pairs != has_pairs:
            raise DatasetError("the validation file and the training file disagree on text_pair")
        unknown = sorted(set(val_table.labels) - set(labels))
        if unknown:
            raise DatasetError(
                f"the validation file has labels not in the training file: {unknown}"
            )
        val_rows, dup_val = _dedupe(val_table.labelled, seen)
        if dup_val:
            problems.append(
                f"{dup_val} validation row(s) repeated a training text and were dropped"
            )

    y = [label_ids[r.label] for r in labelled if r.label is not None]
    val_fraction = 0.0 if val_rows is not None else split.validation_fraction
    rest, val_idx, test_idx = stratified_split(y, (val_fraction, split.test_fraction), seed)
    train_rows = [labelled[i] for i in rest]
    if split.max_train_rows is not None and len(train_rows) > split.max_train_rows:
        train_rows = train_rows[: split.max_train_rows]
    validation = val_rows if val_rows is not None else [labelled[i] for i in val_idx]
    test = [labelled[i] for i in test_idx]
    if not validation:
        raise DatasetError("too few labelled rows to hold out a validation split")
    if len({r.label for r in train_rows}) < 2:
        raise DatasetError("the training split has fewer than 2 classes")

    pool, _ = _dedupe(train_table.unlabelled, seen)
    if inputs.unlabelled_path is not None:
        un_table = _read(inputs.unlabelled_path, require_labels=False)
        if un_table.has_pairs != has_pairs:
            raise DatasetError("the unlabelled file and the training file disagree on text_pair")
        extra, _ = _dedupe([Row(r.text, r.text_pair, None) for r in un_table.rows], seen)
        pool += extra
    if dup_train:
        problems.append(f"{dup_train} duplicate labelled row(s) were dropped before splitting")
    return DataBundle(
        labels=labels,
        train=_examples(train_rows, label_ids),
        validation=_examples(validation, label_ids),
        test=_examples(test, label_ids),
        unlabelled=_examples([Row(r.text, r.text_pair, None) for r in pool], label_ids),
        has_pairs=has_pairs,
        problems=problems,
    )
