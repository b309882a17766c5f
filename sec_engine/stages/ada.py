"""ADA stage: adaptive data augmentation (paper eq. 1: D_aug = ADA(D, M(θ), P)).

- Operators: WordNet synonyms (when installed), embedding-space neighbours (always), random
  insertion / swap / deletion. Back-translation needs a registered translation model; none
  ships offline, so it is reported "unavailable" in the events and the manifest, never faked.
- Adaptive: the amount and strength per class and per example follow the model's current
  loss (`ada_ops.allocate`). The first set is built from the teacher's losses (the student
  starts as the teacher's layers); during compression, every REFRESH_EVERY evaluations the set
  is rebuilt from the *student's* losses on a fresh sample, so augmentation follows what the
  student still gets wrong.
- Augmented rows carry the teacher's soft labels (a label flipped by an edit does not poison
  training) and enter the loss as R_data, weighted by λ1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.data.ada_ops import (
    EmbeddingNeighbours,
    SynonymFn,
    allocate,
    apply_operator,
    wordnet_synonyms,
)
from sec_engine.data.encoding import encode
from sec_engine.data.splits import Example
from sec_engine.data.wordnet_setup import wordnet_available
from sec_engine.spec import AdaConfig, AugmentationOperator
from sec_engine.stages.base import EngineState, SoftSet, Stage
from sec_engine.training import predict_logits, softmax

if TYPE_CHECKING:
    from sec_engine.controller.policy import Decision

INITIAL_ROWS = 2000  # labelled rows scored for the first augmented set
REFRESH_ROWS = 256  # rows re-scored with the student at each refresh
REFRESH_EVERY = 2  # evaluations between refreshes


class AdaStage(Stage):
    name = "ada"

    def __init__(self, config: AdaConfig) -> None:
        self.config = config
        self.synonyms: dict[str, SynonymFn] = {}
        self.operators: list[str] = []
        self.unavailable: dict[str, str] = {}
        self.refreshes = 0
        self.evals = 0
        self.sizes: list[int] = []
        self.slot: int | None = None

    def initialize(self, state: EngineState) -> None:
        teacher: Any = state.teacher  # a transformers PreTrainedModel
        embeddings = teacher.get_input_embeddings().weight
        self.synonyms["embedding_synonym"] = EmbeddingNeighbours(embeddings, state.tokenizer)
        if wordnet_available():
            self.synonyms["wordnet_synonym"] = wordnet_synonyms
        for op in self.config.operators:
            if op == AugmentationOperator.BACK_TRANSLATION:
                self.unavailable[str(op)] = "no translation model is registered"
            elif (
                op == AugmentationOperator.WORDNET_SYNONYM
                and "wordnet_synonym" not in self.synonyms
            ):
                self.unavailable[str(op)] = (
                    "WordNet is not installed (python -m sec_engine.data.wordnet_setup)"
                )
            else:
                self.operators.append(str(op))
        for name, why in self.unavailable.items():
            state.reporter.event(
                "ada.operator_unavailable", f"{name} unavailable: {why}", {"operator": name}
            )

    def build_data(self, state: EngineState) -> None:
        self._rebuild(state, state.teacher, INITIAL_ROWS, seed_offset=0)

    def after_eval(self, state: EngineState, decision: Decision) -> None:
        self.evals += 1
        if state.student is not None and self.evals % REFRESH_EVERY == 0:
            self._rebuild(state, state.student, REFRESH_ROWS, seed_offset=self.evals)
            self.refreshes += 1

    def _rebuild(self, state: EngineState, model: nn.Module, rows: int, seed_offset: int) -> None:
        if not self.operators or not state.labelled:
            return
        if state.deadline.expired():
            state.note_deadline("augmentation", "the augmented set was not (re)built")
            return
        rng = np.random.default_rng([state.spec.seed, 17, seed_offset])
        pick = rng.choice(len(state.labelled), size=min(rows, len(state.labelled)), replace=False)
        train_idx = [state.labelled[int(i)] for i in pick]
        feats = [state.features["train"][i] for i in train_idx]
        labels = np.array([state.data.train[i].label for i in train_idx], dtype=np.int64)
        bs = state.spec.training.batch_size
        logits = predict_logits(model, feats, bs, state.pad_id, state.device)
        losses = F.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(labels), reduction="none"
        ).numpy()
        alloc = allocate(
            losses, labels, self.config.max_augmentations_per_example, self.config.max_strength
        )
        new_examples: list[Example] = []
        for j, i in enumerate(train_idx):
            ex = state.data.train[i]
            for _ in range(int(alloc.counts[j])):
                op = self.operators[int(rng.integers(len(self.operators)))]
                text = apply_operator(op, ex.text, float(alloc.strengths[j]), rng, self.synonyms)
                if text and text != ex.text:
                    new_examples.append(Example(text, ex.text_pair, None))
        aug_feats = encode(state.tokenizer, new_examples, state.max_len)
        targets = (
            softmax(predict_logits(state.teacher, aug_feats, bs, state.pad_id, state.device))
            if aug_feats
            else np.zeros((0, state.num_labels), np.float32)
        )
        soft = SoftSet(
            "augmented", aug_feats, targets.astype(np.float32), np.ones(len(aug_feats), np.float32)
        )
        if self.slot is None:
            self.slot = len(state.soft_sets)
            state.soft_sets.append(soft)
        else:
            state.soft_sets[self.slot] = soft
        state.data_version += 1
        self.sizes.append(len(aug_feats))
        state.reporter.event(
            "ada.augmented",
            f"{len(aug_feats)} augmented rows from {len(train_idx)} scored examples",
            {
                "rows": len(aug_feats),
                "scored": len(train_idx),
                "mean_count": float(alloc.counts.mean()),
            },
        )

    def report(self) -> dict[str, Any]:
        return {
            "operators": self.operators,
            "unavailable": self.unavailable,
            "set_sizes": self.sizes,
            "refreshes": self.refreshes,
            "max_augmentations_per_example": self.config.max_augmentations_per_example,
            "max_strength": self.config.max_strength,
        }
