"""Seeded, stratified, duplicate-free splits and the unlabelled pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from sec_engine.data.splits import load_data, stratified_split
from sec_engine.errors import DatasetError
from sec_engine.result import ResolvedInputs
from sec_engine.spec import DataSplit

pytestmark = pytest.mark.unit


def test_split_is_seeded_stratified_and_disjoint(sentiment_csv: Path) -> None:
    inputs = ResolvedInputs(model="x", train_path=sentiment_csv)
    a = load_data(inputs, DataSplit(validation_fraction=0.2, test_fraction=0.2), seed=1)
    b = load_data(inputs, DataSplit(validation_fraction=0.2, test_fraction=0.2), seed=1)
    c = load_data(inputs, DataSplit(validation_fraction=0.2, test_fraction=0.2), seed=2)
    assert a.train == b.train
    assert a.test == b.test
    assert a.test != c.test
    texts = [{(e.text, e.text_pair) for e in part} for part in (a.train, a.validation, a.test)]
    assert not texts[0] & texts[1]
    assert not texts[0] & texts[2]
    assert not texts[1] & texts[2]
    assert {e.label for e in a.test} == {0, 1}
    assert a.labels == ["neg", "pos"]
    assert len(a.unlabelled) > 0
    assert all(e.label is None for e in a.unlabelled)


def test_duplicates_are_dropped_before_splitting(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = (
        ["text,label"] + [f"row {i},{'a' if i % 2 else 'b'}" for i in range(40)] + ["row 1,a"] * 5
    )
    path.write_text("\n".join(rows) + "\n")
    data = load_data(ResolvedInputs(model="x", train_path=path), DataSplit(), seed=0)
    assert len(data.train) + len(data.validation) + len(data.test) == 40
    assert any("duplicate" in p for p in data.problems)


def test_stratified_split_keeps_small_classes_in_train() -> None:
    labels = [0] * 50 + [1] * 2
    rest, a, b = stratified_split(labels, (0.2, 0.2), seed=0)
    assert sorted(rest + a + b) == list(range(52))
    assert sum(1 for i in rest if labels[i] == 1) == 2


def test_validation_file_with_unknown_labels_is_refused(
    sentiment_csv: Path, tmp_path: Path
) -> None:
    val = tmp_path / "val.csv"
    val.write_text("text,label\nsome text,maybe\nother text,pos\n")
    with pytest.raises(DatasetError, match="labels not in the training file"):
        load_data(
            ResolvedInputs(model="x", train_path=sentiment_csv, validation_path=val),
            DataSplit(),
            seed=0,
        )
