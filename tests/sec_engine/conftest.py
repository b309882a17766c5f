"""Fixtures for engine tests: tiny random-init models saved as HF folders, and small datasets."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

WORDS_POS = ["good", "great", "fine", "superb", "lovely", "fun", "brilliant", "warm"]
WORDS_NEG = ["bad", "awful", "dull", "poor", "boring", "weak", "ugly", "cold"]
FILLER = ["the", "movie", "film", "plot", "was", "really", "quite", "a", "story", "and", "acting"]


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return special + sorted(set(WORDS_POS + WORDS_NEG + FILLER)) + [f"w{i}" for i in range(40)]


def make_tokenizer(path: Path):
    from transformers import BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    # transformers 5.x: the tokenizer takes the vocabulary itself (`vocab=`), not a file path.
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(_vocab())}, do_lower_case=True)
    tok.save_pretrained(path)
    return tok


def make_tiny_bert(path: Path, *, layers: int = 2, seed: int = 0) -> Path:
    """A random-init BERT (hidden 32, 4 heads) saved with safetensors and a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = make_tokenizer(path)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def write_sentiment_csv(
    path: Path, n: int, *, seed: int = 0, pairs: bool = False, unlabelled: int = 0
) -> Path:
    """A learnable toy sentiment set: the label follows the polar words in the text."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fields = ["text", "text_pair", "label"] if pairs else ["text", "label"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i in range(n + unlabelled):
            positive = rng.random() < 0.5
            polar = WORDS_POS if positive else WORDS_NEG
            words = rng.sample(FILLER, 4) + rng.sample(polar, 2) + [f"w{rng.randrange(40)}"]
            rng.shuffle(words)
            row = {
                "text": " ".join(words),
                "label": ("pos" if positive else "neg") if i < n else "",
            }
            if pairs:
                row["text_pair"] = " ".join([*rng.sample(FILLER, 3), rng.choice(polar)])
            writer.writerow(row)
    return path


def make_tiny_model(path: Path, arch: str, *, layers: int = 2, seed: int = 0) -> Path:
    """A random-init tiny encoder of another family, with the same WordPiece vocabulary.

    Non-BERT families get a tokenizer without token_type_ids (they have no segment
    embeddings to speak of) and pad id 0, so their position ids match the tokenizer.
    """
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        MPNetConfig,
        MPNetForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    if arch == "bert":
        return make_tiny_bert(path, layers=layers, seed=seed)
    torch.manual_seed(seed)
    tok = make_tokenizer(path)
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(path)
    common = {"vocab_size": len(tok), "pad_token_id": 0, "num_labels": 2}
    if arch == "roberta":
        config = RobertaConfig(
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=130,
            **common,
        )
        model = RobertaForSequenceClassification(config)
    elif arch == "distilbert":
        config = DistilBertConfig(
            dim=32, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=128, **common
        )
        model = DistilBertForSequenceClassification(config)
    elif arch == "mpnet":
        config = MPNetConfig(
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=130,
            **common,
        )
        model = MPNetForSequenceClassification(config)
    else:
        raise ValueError(arch)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentiment_csv(tmp_path_factory.mktemp("data") / "train.csv", 240, unlabelled=40)
