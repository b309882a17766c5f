"""TAL stage: transfer-active learning with pseudo-labels (paper eq. 2: L_TAL = L_TL + λ·L_AL).

- Transfer: the teacher starts from the pretrained base (the pipeline loaded it).
- Active learning: the training rows are treated as unlabelled until bought. The label budget
  (floor(label_budget × train rows)) is spent as a random seed set, then in `rounds` rounds
  of uncertainty sampling (entropy / margin / random baseline) with the current teacher. A
  row's label is read only once it is bought, so unbought labels never leak into training.
- Semi-supervised: from round 2 on, unbought and unlabelled rows on which the teacher is
  confident (≥ threshold) are pseudo-labelled with its probabilities and trained on with
  weight λ (`consistency_weight`) — L_AL.
- For the student: the final teacher scores every unbought training row and the unlabelled
  pool once, and the whole lot goes to the compression loop as the "distill" soft set
  (R_data) with the teacher's full probabilities. The threshold exists to stop the teacher
  from reinforcing its own mistakes as hard labels; a student distilled on soft targets
  learns most from exactly the rows near the boundary that a threshold would drop. No label
  of an unbought row is read, so the label budget is untouched.

Scoring a large pool every round costs inference time, so each round scores a seeded random
candidate subset of at most CANDIDATES_PER_LABEL × the round's purchase.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sec_engine.callbacks import Phase, TraceRow
from sec_engine.data.encoding import Features
from sec_engine.data.tal_ops import acquisition_plan, make_heuristic, pseudo_labels
from sec_engine.spec import TalConfig
from sec_engine.stages.base import EngineState, SoftSet, Stage
from sec_engine.stages.teacher import fine_tune, validation_metrics
from sec_engine.training import Deadline, predict_logits, softmax

CANDIDATES_PER_LABEL = 4
# Rounds before the last train for this share of `teacher_epochs`: enough for the teacher's
# uncertainty to pick the next labels well. The last round trains the full `teacher_epochs`
# over every label bought, the same schedule a plain fine-tune gets over its labels, since the
# final teacher caps everything learnt from it (pseudo-labels, soft targets, distillation).
EARLY_ROUND_EPOCHS = 0.5
MAX_PSEUDO_SCORED = 20_000


def round_costs(plan: list[int], pseudo: bool) -> list[float]:
    """Relative training cost of each round: labels held × epochs (× 1.5 when a half batch of
    pseudo-labelled rows rides along), so each round's share of the teacher's time matches
    its work and the last, full-epoch round is not starved by equal shares."""
    held = np.cumsum(plan, dtype=np.float64)
    last = len(plan) - 1
    return [
        float(held[r]) * (1.0 if r == last else EARLY_ROUND_EPOCHS) * (1.5 if pseudo and r else 1.0)
        for r in range(len(plan))
    ]


class TalStage(Stage):
    name = "tal"

    def __init__(self, config: TalConfig) -> None:
        self.config = config
        self.rounds: list[dict[str, Any]] = []
        self.pseudo: SoftSet | None = None
        self.distill: SoftSet | None = None
        self.plan: list[int] = []

    def initialize(self, state: EngineState) -> None:
        n = len(state.data.train)
        self.plan = acquisition_plan(
            n,
            state.spec.budget.label_budget,
            self.config.initial_fraction,
            self.config.rounds,
            min_seed=min(n, 2 * state.num_labels),
        )
        state.labelled = []

    def train_teacher(self, state: EngineState) -> bool:
        spec = state.spec
        rng = np.random.default_rng([spec.seed, 11])
        heuristic = make_heuristic(self.config.strategy, spec.seed)
        pool = [int(i) for i in rng.permutation(len(state.data.train))]
        bought: list[int] = pool[: self.plan[0]]
        pool = pool[self.plan[0] :]
        phase_deadline = state.deadline
        n_stages = len(self.plan)
        cost = round_costs(self.plan, self.config.consistency_weight > 0)
        for r, _ in enumerate(self.plan):
            if r > 0:
                k = self.plan[r]
                bought_now = self._acquire(state, heuristic, pool, k, rng)
                bought += bought_now
                chosen = set(bought_now)
                pool = [i for i in pool if i not in chosen]
            state.labelled = sorted(bought)
            if r > 0 and self.config.consistency_weight > 0:
                self.pseudo = self._pseudo_set(*self._score_pool(state, pool))
            share = cost[r] / sum(cost[r:])
            last = r == n_stages - 1
            result = fine_tune(
                state,
                state.teacher,
                state.labelled_features(),
                state.train_labels(),
                epochs=spec.training.teacher_epochs * (1.0 if last else EARLY_ROUND_EPOCHS),
                deadline=Deadline(phase_deadline.remaining() * share),
                seed=spec.seed + r,
                progress=(r / n_stages, (r + 1) / n_stages),
                pseudo=self.pseudo,
                pseudo_weight=self.config.consistency_weight,
            )
            acc = validation_metrics(state, state.teacher)["accuracy"]
            entry = {
                "round": r,
                "bought": self.plan[r],
                "labels_used": len(state.labelled),
                "pseudo_labelled": 0 if self.pseudo is None else len(self.pseudo.features),
                "val_accuracy": acc,
                "steps": result.steps,
            }
            self.rounds.append(entry)
            state.reporter.trace(
                TraceRow(
                    step=r,
                    phase=Phase.TEACHER,
                    lambda1=state.lambda1,
                    lambda2=state.lambda2,
                    val_accuracy=acc,
                    labels_used=len(state.labelled),
                    observation={"round": r, "pool": len(pool), "val_accuracy": acc},
                    decision={
                        "acquired": self.plan[r],
                        "strategy": str(self.config.strategy),
                        "rule": "tal_round",
                    },
                )
            )
            state.reporter.event(
                "tal.round", f"round {r}: {len(state.labelled)} labels, val acc {acc:.4f}", entry
            )
        feats, probs = self._score_pool(state, pool)
        if self.config.consistency_weight > 0:
            self.pseudo = self._pseudo_set(feats, probs)
        self.distill = SoftSet(
            "distill", feats, probs.astype(np.float32), np.ones(len(feats), np.float32)
        )
        return True

    def _acquire(
        self, state: EngineState, heuristic: Any, pool: list[int], k: int, rng: np.random.Generator
    ) -> list[int]:
        if k <= 0 or not pool:
            return []
        if state.deadline.expired():  # no time to score: buy at random, and say so
            state.note_deadline("label acquisition", f"{k} labels bought at random")
            return [
                pool[int(i)] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)
            ]
        n_cand = min(len(pool), CANDIDATES_PER_LABEL * k)
        candidates = [pool[int(i)] for i in rng.choice(len(pool), size=n_cand, replace=False)]
        feats = [state.features["train"][i] for i in candidates]
        probs = softmax(
            predict_logits(
                state.teacher, feats, state.spec.training.batch_size, state.pad_id, state.device
            )
        )
        return [candidates[int(i)] for i in heuristic.select(probs, k)]

    def _score_pool(self, state: EngineState, pool: list[int]) -> tuple[list[Features], np.ndarray]:
        """Teacher probabilities on unbought training rows and the unlabelled pool."""
        feats = [state.features["train"][i] for i in pool] + state.features["unlabelled"]
        if state.deadline.expired():
            state.note_deadline("pseudo-labelling", f"{len(feats)} pool rows left unscored")
            feats = []
        if len(feats) > MAX_PSEUDO_SCORED:
            rng = np.random.default_rng([state.spec.seed, 13])
            feats = [
                feats[int(i)] for i in rng.choice(len(feats), MAX_PSEUDO_SCORED, replace=False)
            ]
        if not feats:
            return [], np.zeros((0, state.num_labels), np.float32)
        probs = softmax(
            predict_logits(
                state.teacher, feats, state.spec.training.batch_size, state.pad_id, state.device
            )
        )
        return feats, probs

    def _pseudo_set(self, feats: list[Features], probs: np.ndarray) -> SoftSet:
        """The confident rows (≥ threshold), weighted by confidence, for the teacher's L_AL."""
        if not feats:
            return SoftSet("pseudo", [], probs.astype(np.float32), np.zeros(0, np.float32))
        keep, conf = pseudo_labels(probs, self.config.pseudo_label_threshold)
        return SoftSet(
            "pseudo",
            [feats[int(i)] for i in keep],
            probs[keep].astype(np.float32),
            conf.astype(np.float32),
        )

    def build_data(self, state: EngineState) -> None:
        if self.distill is not None and len(self.distill.features):
            # Probabilities from the final teacher (the set was scored after training).
            state.soft_sets.append(self.distill)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "pseudo": self.pseudo, "distill": self.distill}

    def restore_checkpoint(self, state: EngineState, saved: dict[str, Any]) -> None:
        rounds, pseudo, distill = list(saved["rounds"]), saved["pseudo"], saved["distill"]
        if not all(s is None or isinstance(s, SoftSet) for s in (pseudo, distill)):
            raise ValueError("tal: the pseudo-label and distill sets are not soft sets")
        self.rounds, self.pseudo, self.distill = rounds, pseudo, distill

    def report(self) -> dict[str, Any]:
        return {
            "strategy": str(self.config.strategy),
            "plan": self.plan,
            "rounds": self.rounds,
            "pseudo_labelled": 0 if self.pseudo is None else len(self.pseudo.features),
            "distill_rows": 0 if self.distill is None else len(self.distill.features),
            "pseudo_label_threshold": self.config.pseudo_label_threshold,
            "consistency_weight": self.config.consistency_weight,
        }
