"""The sentence-pair benchmark data: agreement pairs from the real Rotten Tomatoes snippets."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sec_engine.data.rotten_tomatoes import PAIRS_FILE, ensure, read_rows, write_agreement_pairs
from sec_engine.data.splits import load_data
from sec_engine.result import ResolvedInputs
from sec_engine.spec import DataSplit

pytestmark = pytest.mark.unit


def test_pairs_are_labelled_by_agreement_and_use_each_snippet_once(tmp_path: Path) -> None:
    path = write_agreement_pairs(tmp_path / PAIRS_FILE)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    source = {r["text"]: r["label"] for r in read_rows()}
    texts = [r["text"] for r in rows] + [r["text_pair"] for r in rows]
    assert len(texts) == len(set(texts))  # no snippet in two pairs: none leaks across splits
    for r in rows[:500]:
        a, b = source[r["text"]], source[r["text_pair"]]
        if not a:  # plot synopses: the unlabelled pool
            assert (b, r["label"]) == ("", "")
        else:
            assert r["label"] == ("agree" if a == b else "disagree")
    labels = [r["label"] for r in rows if r["label"]]
    assert 0.4 < labels.count("agree") / len(labels) < 0.6
    # the engine reads it as a pair task with an unlabelled pool
    data = load_data(ResolvedInputs(model="x", train_path=path), DataSplit(), seed=0)
    assert data.train[0].text_pair
    assert data.unlabelled
    before = path.read_bytes()
    assert ensure(path) == path  # already there: left as it is
    assert path.read_bytes() == before
