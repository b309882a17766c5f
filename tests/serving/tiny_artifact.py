"""A real, tiny, servable artifact: a WordPiece tokenizer built with `tokenizers`, a random-init
BertForSequenceClassification (hidden 32, 2 layers) trained for a few seconds on a synthetic
3-class task so its predictions are decisive, the int8 ONNX export, the manifest with sha256s
and the worker's tar.gz. Built once per test session (a few seconds)."""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Artifact, ArtifactStatus
from app.db.session import unit_of_work
from app.settings import Settings
from app.storage import store_from_settings

LABELS = ["negative", "neutral", "positive"]
POSITIVE = ["good", "great", "lovely", "superb", "fun", "brilliant"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "terrible"]
NEUTRAL = ["movie", "film", "plot", "acting", "story", "scene", "the", "a", "was", "is", "it"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_LENGTH = 48
TRAIN_STEPS = 70


@dataclass(frozen=True)
class TinyArtifact:
    directory: Path  # the unpacked artifact directory
    archive: Path  # the worker's .tar.gz of it
    sha256: str
    manifest: dict[str, Any]


def sentence(rng: random.Random, label: int, n: int | None = None) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(n or rng.randint(3, 9))]
    if label != 1:
        pool = POSITIVE if label == 2 else NEGATIVE
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    return " ".join(words)


def sample_inputs(n: int, seed: int = 0) -> list[str | dict[str, str]]:
    """Texts and pairs, mixed, the way a client would send them."""
    rng = random.Random(seed)
    out: list[str | dict[str, str]] = []
    for i in range(n):
        text = sentence(rng, rng.randrange(3))
        out.append({"text": text, "text_pair": sentence(rng, 1)} if i % 3 == 2 else text)
    return out


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizer

    pieces = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + list(LETTERS)
    pieces += ["##" + c for c in LETTERS] + list(".,!?'-")
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizer(tokenizer_object=tok, model_max_length=MAX_LENGTH)


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]  # num_labels etc. go to PretrainedConfig
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config)
    rng = random.Random(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(TRAIN_STEPS):
        labels = [rng.randrange(3) for _ in range(32)]
        texts = [sentence(rng, y) for y in labels]
        if step % 4 == 3:  # pair batches too, so pair inputs get decisive answers as well
            enc = tokenizer(
                texts, [sentence(rng, 1) for _ in labels], padding=True, return_tensors="pt"
            )
        else:
            enc = tokenizer(texts, padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor(labels)).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.train(False)  # eval mode
    return model


@functools.cache
def tiny_artifact() -> TinyArtifact:
    """Built once per test process, shared by tests/serving and tests/app (the two folders
    cannot share a conftest fixture)."""
    root = Path(tempfile.mkdtemp(prefix="sec-tiny-artifact-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_artifact(root)


def build_tiny_artifact(root: Path) -> TinyArtifact:
    from bench.serving.artifacts import pack, write_artifact_dir

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    directory = root / "artifact"
    manifest = write_artifact_dir(model, tokenizer, directory, int8=True)
    archive = root / "artifact.tar.gz"
    sha = pack(directory, archive, top="job_tiny")
    return TinyArtifact(directory=directory, archive=archive, sha256=sha, manifest=manifest)


def register_artifact(
    db: sessionmaker[Session],
    settings: Settings,
    tenant_id: str,
    job_id: str,
    tiny: TinyArtifact,
    *,
    archive: Path | None = None,
    sha256: str | None = None,
) -> str:
    """Store the archive and insert the ready Artifact row, the way the worker does.

    `archive` / `sha256` let a test store other bytes or record another checksum.
    """
    key = f"{tenant_id}/{job_id}/artifact.tar.gz"
    src = archive or tiny.archive
    store_from_settings(settings).put_file(key, src)
    manifest = tiny.manifest
    with unit_of_work(db) as s:
        row = Artifact(
            tenant_id=tenant_id,
            job_id=job_id,
            status=ArtifactStatus.READY.value,
            storage_key=key,
            size_bytes=src.stat().st_size,
            sha256=sha256 or tiny.sha256,
            files=[
                {"path": p, "size_bytes": manifest["file_sizes"][p], "sha256": h}
                for p, h in manifest["sha256"].items()
            ],
            manifest=manifest,
        )
        s.add(row)
        s.flush()
        return row.id
