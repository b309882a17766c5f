"""The job's plan: how many steps each phase trains, sized to the budget before any is spent.

A job used to split its wall clock into phase shares and train each phase until its share ran
out. Then the work done depended on the machine's load: a busy worker trained a weaker
teacher from the same spec. Now a short calibration (`sec_engine.calibration`) measures what
a step costs on this device, and this module turns the spec into a plan of steps:

- the spec's epochs (teacher, student) are the work asked for; when its predicted time fits
  the budget, the plan is exactly that work, whatever the load during the run;
- when it does not fit, teacher and student epochs shrink together, on a line from the
  spec's epochs down to a useful minimum (one pass over the labels for each), until it does,
  in steps of a tenth of that line (`PLAN_GRID`), so calibration noise does not change them;
- when even that minimum does not fit, the plan says so (`fits=False`) with the budget it
  needs (`minimum_minutes`), and the job warns in its first events.

Pure arithmetic over plain numbers (no torch), so the API can show it and tests can drive it
with a scripted device. What each phase costs is one formula here; the pipeline runs the
planned epochs and reports the predicted and the actual minutes side by side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sec_engine.spec import JobSpec

# Evaluating and exporting (test metrics of both models, ONNX export and int8 quantization,
# the latency runs) in units of "test rows scored by the teacher", and a fixed part.
EXPORT_FIXED_S = 30.0
EXPORT_TEST_PASSES = 4.0
LATENCY_RUNS = 12  # time_torch + time_onnx, warm-up + 5 repeats, for the teacher
PLAN_MARGIN = 0.9  # the plan fills at most this share of the budget (calibration is rough)
MIN_EPOCHS = 1.0  # a useful plan passes at least once over the labels, teacher and student
# A shrunk plan is rounded down to a multiple of this step on the line from the minimum plan
# (0) to the spec's epochs (1). Two calibrations of one device differ by a few per cent (on
# the 2-core build machine: 28.8-29.6 predicted minutes for the default spec, quiet or with
# two processes spinning), and a continuous plan turned each difference into different step
# counts; on the grid, the same spec on the same device trains the same steps unless its
# prediction sits within those few per cent of a grid line.
PLAN_GRID = 0.1
# Relative cost of the work units, as the engine runs them (see stages.tal.round_costs and
# stages.compress): a TAL round with pseudo-labels draws half a batch more per step.
PSEUDO_STEP_FACTOR = 1.5
# The share of compression steps that also train on a soft-labelled batch: the controller
# starts at 0.5 and raises it by 0.1 at each evaluation over its threshold; on MiniLM + Rotten
# Tomatoes runs it averaged 0.6-0.7 (controller.policy.DATA_SHARE_INITIAL, the λ trace).
EXPECTED_DATA_SHARE = 0.65
# Wall seconds a training loop spends per second of the calibrated steps: batch collation,
# the teacher-cache gather, gate hooks, the bookkeeping at evaluations, the parts of a step
# that run on one thread. On 2 CPU cores (MiniLM-L6, Rotten Tomatoes, seed 1, quiet box) the
# compression phase took 786 wall seconds for 606 seconds of the plan's clock (1.3x) and the
# whole job 20.3 min where the plan with this factor said 20.8 (teacher 6.4 vs 5.5, student
# 13.1 vs 14.1): one factor for both loops, fitted on one run; revisit with more runs.
LOOP_OVERHEAD = 1.25
TAL_EARLY_ROUND_EPOCHS = 0.5  # stages.tal.EARLY_ROUND_EPOCHS (kept equal by a unit test)
ADA_INITIAL_ROWS = 2000  # stages.ada.INITIAL_ROWS (kept equal by a unit test)
MAX_SCORED = 20_000  # stages.tal.MAX_PSEUDO_SCORED (kept equal by a unit test)


@dataclass(frozen=True)
class Throughput:
    """Seconds per unit of work on this device, from the calibration (or scripted in tests).

    `student_step_s` is one compression step as the loop takes it without a soft batch: the
    student's forward (with hidden states when they are distilled) and backward, the teacher's
    outputs coming from a cache; `soft_batch_s` what a soft-labelled batch adds to a step that
    takes one (None: as much as a step); `teacher_forward_s` one teacher forward per batch, for
    the cache built once (None: a third of a teacher training step); `student_infer_row_s`
    one row scored by the student.
    """

    teacher_step_s: float
    teacher_infer_row_s: float
    student_step_s: float
    student_infer_row_s: float
    soft_batch_s: float | None = None
    teacher_forward_s: float | None = None
    calibration_s: float = 0.0
    how: str = "scripted"

    @property
    def soft_batch(self) -> float:
        return self.student_step_s if self.soft_batch_s is None else self.soft_batch_s

    @property
    def teacher_forward(self) -> float:
        return self.teacher_step_s / 3 if self.teacher_forward_s is None else self.teacher_forward_s


@dataclass(frozen=True)
class Sizes:
    """Row counts the plan is made for (after the split)."""

    train: int
    validation: int
    test: int
    unlabelled: int


@dataclass(frozen=True)
class Plan:
    """Planned work per phase and what it is predicted to take."""

    teacher_epochs: float
    student_epochs: float
    teacher_steps: int
    student_steps: int
    scale: float  # 1.0 = the spec's epochs; 0.0 = the minimum useful plan; between: shrunk to fit
    predicted_seconds: dict[str, float]
    budget_seconds: float
    fits: bool  # False: even the minimum useful plan does not fit the budget
    minimum_minutes: float  # the budget the minimum useful plan needs
    full_minutes: float  # the budget the spec's own epochs need
    throughput: Throughput
    notes: list[str] = field(default_factory=list)

    @property
    def predicted_minutes(self) -> float:
        return sum(self.predicted_seconds.values()) / 60.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["predicted_seconds"] = {k: round(v, 1) for k, v in self.predicted_seconds.items()}
        d["predicted_minutes"] = round(self.predicted_minutes, 2)
        d["minimum_minutes"] = round(self.minimum_minutes, 2)
        d["full_minutes"] = round(self.full_minutes, 2)
        d["budget_minutes"] = round(self.budget_seconds / 60.0, 2)
        d["scale"] = round(self.scale, 4)
        return d


def labels_to_use(spec: JobSpec, train_rows: int) -> int:
    """Labels the job trains on: the label budget when TAL spends it, else every row."""
    if spec.techniques.tal.enabled:
        return min(train_rows, max(1, math.floor(spec.budget.label_budget * train_rows)))
    return train_rows


def _steps(rows: int, batch: int, epochs: float) -> int:
    return max(1, math.ceil(rows / batch * epochs)) if rows and epochs > 0 else 0


def _evals(steps: int, every: int) -> int:
    return steps // every + 2 if steps else 0  # + the one before and the one at the end


def _teacher_seconds(
    spec: JobSpec, sizes: Sizes, tp: Throughput, epochs: float
) -> tuple[float, int]:
    """Teacher phase: training steps, validation evaluations and TAL's scoring passes."""
    cfg, tal = spec.training, spec.techniques.tal
    bs, n_labels = cfg.batch_size, labels_to_use(spec, sizes.train)
    if epochs <= 0:
        return 0.0, 0
    if not tal.enabled:
        steps = _steps(sizes.train, bs, epochs)
        val = _evals(steps, cfg.eval_every_steps) * sizes.validation
        train = steps * tp.teacher_step_s * LOOP_OVERHEAD
        return train + val * tp.teacher_infer_row_s, steps
    seed = round(tal.initial_fraction * n_labels)
    per_round = (n_labels - seed) / tal.rounds
    held = [seed + per_round * r for r in range(tal.rounds + 1)]
    pseudo = tal.consistency_weight > 0
    seconds, total_steps = 0.0, 0
    pool_rows = sizes.train - n_labels + sizes.unlabelled
    for r, rows in enumerate(held):
        last = r == len(held) - 1
        steps = _steps(round(rows), bs, epochs * (1.0 if last else TAL_EARLY_ROUND_EPOCHS))
        factor = PSEUDO_STEP_FACTOR if pseudo and r else 1.0
        scored = float(_evals(steps, cfg.eval_every_steps) * sizes.validation)
        if r:
            scored += 4 * per_round  # acquisition candidates (stages.tal.CANDIDATES_PER_LABEL)
            if pseudo:  # the unbought and unlabelled rows, for pseudo-labels
                scored += min(MAX_SCORED, sizes.train - rows + sizes.unlabelled)
        train = steps * factor * tp.teacher_step_s * LOOP_OVERHEAD
        seconds += train + scored * tp.teacher_infer_row_s
        total_steps += steps
    seconds += min(MAX_SCORED, pool_rows) * tp.teacher_infer_row_s  # the final distill set
    return seconds, total_steps


def _data_seconds(spec: JobSpec, sizes: Sizes, tp: Throughput) -> float:
    ada = spec.techniques.ada
    if not ada.enabled:
        return 0.0
    scored = min(ADA_INITIAL_ROWS, labels_to_use(spec, sizes.train))
    augmented = scored * ada.max_augmentations_per_example
    return (scored + augmented) * tp.teacher_infer_row_s


def _student_seconds(
    spec: JobSpec, sizes: Sizes, tp: Throughput, epochs: float
) -> tuple[float, int]:
    cfg, t = spec.training, spec.techniques
    if not (t.sqd.enabled or t.aip.enabled or t.ada.enabled or t.tal.enabled):
        return 0.0, 0
    labels = labels_to_use(spec, sizes.train)
    steps = _steps(labels, cfg.batch_size, epochs)
    evals = _evals(steps, cfg.eval_every_steps)
    # Only ADA's augmented rows and TAL's unbought / unlabelled rows make soft-labelled
    # batches; without either the pool is empty and no step pays for one.
    share = EXPECTED_DATA_SHARE if (t.ada.enabled or t.tal.enabled) else 0.0
    per_step = (tp.student_step_s + share * tp.soft_batch) * LOOP_OVERHEAD
    seconds = steps * per_step + evals * sizes.validation * tp.student_infer_row_s
    if t.sqd.enabled:  # the teacher's outputs on every labelled row, cached once
        seconds += math.ceil(labels / cfg.batch_size) * tp.teacher_forward
    if t.aip.enabled:
        seconds += evals * 4 * tp.student_step_s  # Taylor importance (aip.TAYLOR_BATCHES)
    if t.ada.enabled:  # a refresh every other evaluation: student scores, teacher labels
        refresh_rows = 256 * (1 + t.ada.max_augmentations_per_example)
        seconds += evals / 2 * refresh_rows * tp.teacher_infer_row_s
    return seconds, steps


def _export_seconds(spec: JobSpec, sizes: Sizes, tp: Throughput) -> float:
    rows = sizes.test or sizes.validation
    latency_rows = LATENCY_RUNS * spec.targets.latency_batch_size
    seq_factor = spec.targets.latency_seq_len / max(8, min(spec.training.max_seq_len, 64))
    return EXPORT_FIXED_S + tp.teacher_infer_row_s * (
        EXPORT_TEST_PASSES * rows + latency_rows * seq_factor
    )


def predict(
    spec: JobSpec, sizes: Sizes, tp: Throughput, teacher_epochs: float, student_epochs: float
) -> tuple[dict[str, float], int, int]:
    """Predicted seconds per phase for the given epochs, and the step counts."""
    teacher_s, teacher_steps = _teacher_seconds(spec, sizes, tp, teacher_epochs)
    student_s, student_steps = _student_seconds(spec, sizes, tp, student_epochs)
    seconds = {
        "calibration": tp.calibration_s,
        "teacher": teacher_s,
        "data": _data_seconds(spec, sizes, tp),
        "compressing": student_s,
        "evaluating_exporting": _export_seconds(spec, sizes, tp),
    }
    return seconds, teacher_steps, student_steps


def make_plan(spec: JobSpec, sizes: Sizes, tp: Throughput, *, elapsed_s: float = 0.0) -> Plan:
    """The largest plan, up to the spec's own epochs, that fits the budget (see module doc).

    `elapsed_s`: budget already spent before planning (reading data, loading the model).
    """
    cfg = spec.training
    budget = spec.budget.max_minutes * 60.0
    usable = max(0.0, budget * PLAN_MARGIN - elapsed_s)
    full = (cfg.teacher_epochs, cfg.student_epochs)
    # The minimum useful plan: one pass over the labels for the teacher (when it trains at
    # all) and for the student, or the spec's own epochs where they ask for less.
    least = (min(MIN_EPOCHS, full[0]), min(MIN_EPOCHS, full[1]))

    def epochs(x: float) -> tuple[float, float]:
        """x = 0: the minimum plan; x = 1: the spec's epochs; linear in between."""
        return (least[0] + x * (full[0] - least[0]), least[1] + x * (full[1] - least[1]))

    def total(x: float) -> float:
        return sum(predict(spec, sizes, tp, *epochs(x))[0].values())

    notes: list[str] = []
    fits = total(0.0) <= usable
    if total(1.0) <= usable:
        x = 1.0
    elif not fits:
        x = 0.0
        notes.append(
            f"the budget ({spec.budget.max_minutes:g} min) is too small for a useful plan on "
            f"this device: one pass over the labels for teacher and student needs about "
            f"{_minutes_needed(total(0.0), elapsed_s):.0f} min"
        )
    else:
        lo, hi = 0.0, 1.0
        for _ in range(30):  # bisection; total() increases with x
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if total(mid) <= usable else (lo, mid)
        x = math.floor(lo / PLAN_GRID + 1e-9) * PLAN_GRID
        notes.append(
            f"the spec's epochs need about {_minutes_needed(total(1.0), elapsed_s):.0f} min; "
            f"the plan trains teacher {epochs(x)[0]:.2f} of {full[0]:g} epochs and student "
            f"{epochs(x)[1]:.2f} of {full[1]:g} to fit {spec.budget.max_minutes:g} min"
        )
    teacher_epochs, student_epochs = epochs(x)
    seconds, t_steps, s_steps = predict(spec, sizes, tp, teacher_epochs, student_epochs)
    return Plan(
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        teacher_steps=t_steps,
        student_steps=s_steps,
        scale=x,
        predicted_seconds=seconds,
        budget_seconds=budget,
        fits=fits,
        minimum_minutes=_minutes_needed(total(0.0), elapsed_s),
        full_minutes=_minutes_needed(total(1.0), elapsed_s),
        throughput=tp,
        notes=notes,
    )


def _minutes_needed(seconds: float, elapsed_s: float) -> float:
    """The budget (minutes) under which `seconds` of planned work fits with the margin."""
    return (seconds + elapsed_s) / PLAN_MARGIN / 60.0


def planned_spec(spec: JobSpec, plan: Plan) -> JobSpec:
    """The spec the phases run: the user's, with the planned epochs."""
    if (plan.teacher_epochs, plan.student_epochs) == (
        spec.training.teacher_epochs,
        spec.training.student_epochs,
    ):
        return spec
    training = spec.training.model_copy(
        update={"teacher_epochs": plan.teacher_epochs, "student_epochs": plan.student_epochs}
    )
    return spec.model_copy(update={"training": training})
