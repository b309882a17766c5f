"""The job spec: what a user asks the SEC engine to do.

This module is the contract between the service (which validates it on `POST /v1/jobs` and
stores it as JSON on the job row) and the engine (which runs it). It imports nothing heavy
(no torch), so the API can validate specs without loading the ML stack.

Every technique of the paper is one switchable section under `techniques`, so the paper's
ablations (Tables 1-4) are specs with sections switched off. Unknown fields are rejected
everywhere (`extra="forbid"`): a typo in a spec must fail loudly, not be ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    """Base for every spec section: unknown keys are an error, and sections are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"


HARD_CAP_FACTOR = 2.0  # default wall-clock cap, as a multiple of max_minutes


class Budget(StrictModel):
    """Time and labels a job may spend.

    `max_minutes` sizes the plan: a calibration at the start measures this device's speed and
    the job plans its steps to fit (sec_engine.planning). Load on the machine makes the planned
    steps take longer; it does not change them. `hard_cap_minutes` is the wall clock's hard
    limit: when it passes, the job ends with the best model so far and says so.
    """

    max_minutes: float = Field(
        default=30.0,
        gt=0,
        le=24 * 60,
        description="Compute budget the job's plan is sized to, at this device's measured speed.",
    )
    hard_cap_minutes: float | None = Field(
        default=None,
        gt=0,
        le=48 * 60,
        description="Wall-clock limit; the job then ends with the best model so far. "
        f"Default {HARD_CAP_FACTOR:g} x max_minutes, so a busy machine slows the plan down "
        "instead of cutting it short.",
    )
    label_budget: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Fraction of the labelled training rows whose labels may be used (TAL spends it).",
    )

    @model_validator(mode="after")
    def _cap_above_budget(self) -> Self:
        if self.hard_cap_minutes is not None and self.hard_cap_minutes < self.max_minutes:
            raise ValueError("budget.hard_cap_minutes must be at least budget.max_minutes")
        return self

    @property
    def wall_cap_seconds(self) -> float:
        cap = self.hard_cap_minutes
        return 60.0 * (cap if cap is not None else HARD_CAP_FACTOR * self.max_minutes)


class Targets(StrictModel):
    """Targets are reported per target as met / not met; missing one never fails the job."""

    max_size_mb: float | None = Field(default=None, gt=0)
    min_compression: float | None = Field(
        default=None, ge=1, description="Teacher size / compressed size, both measured on disk."
    )
    max_latency_ms: float | None = Field(default=None, gt=0)
    latency_batch_size: int = Field(default=32, ge=1, le=1024)
    latency_seq_len: int = Field(default=128, ge=8, le=4096)
    max_accuracy_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Accuracy drop vs the teacher, as a fraction (0.01 = 1 point).",
    )

    @model_validator(mode="after")
    def _one_size_target(self) -> Self:
        if self.max_size_mb is not None and self.min_compression is not None:
            raise ValueError("give either targets.max_size_mb or targets.min_compression, not both")
        return self

    def size_target_mb(self, teacher_mb: float) -> float | None:
        """The size target in MB: `max_size_mb`, or the teacher's size / `min_compression`;
        None when neither is set. `teacher_mb` is the caller's measure of the teacher: the
        compression loop's, from its parameter count (fp32), while training; the export's,
        from its file on disk, once measured."""
        if self.max_size_mb is not None:
            return self.max_size_mb
        if self.min_compression is not None:
            return teacher_mb / self.min_compression
        return None


class TrainingConfig(StrictModel):
    """Shared optimisation settings for teacher fine-tuning and student training."""

    batch_size: int = Field(default=32, ge=1, le=1024)
    max_seq_len: int = Field(default=128, ge=8, le=4096)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    teacher_epochs: float = Field(
        default=1.0, ge=0, le=100, description="0 = the base is already a fine-tuned teacher."
    )
    student_epochs: float = Field(default=2.0, gt=0, le=100)
    student_learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Learning rate of the compressed student; None = learning_rate. A small "
        "student distilled for a few epochs usually wants a larger one than the teacher.",
    )
    # An upper bound against hostile values (10^18 was accepted and reached the planner's
    # arithmetic), far above any useful interval between evaluations.
    eval_every_steps: int = Field(default=50, ge=1, le=1_000_000)


class DataSplit(StrictModel):
    """How the uploaded labelled rows are split when no separate validation set is given.

    The test split is held out from everything the engine tunes on; final metrics are on it.
    """

    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    # Far above any upload the service takes (SEC_MAX_DATASET_ROWS, 500,000 by default);
    # the bound keeps a hostile 10^18 a 422 instead of a number the engine has to survive.
    max_train_rows: int | None = Field(default=None, ge=10, le=10_000_000)


class AugmentationOperator(StrEnum):
    WORDNET_SYNONYM = "wordnet_synonym"
    EMBEDDING_SYNONYM = "embedding_synonym"
    RANDOM_INSERTION = "random_insertion"
    RANDOM_SWAP = "random_swap"
    RANDOM_DELETION = "random_deletion"
    BACK_TRANSLATION = "back_translation"


class AdaConfig(StrictModel):
    """Adaptive data augmentation (paper eq. 1)."""

    enabled: bool = True
    # Each operator at most once (ADA's allocation is per operator, a repeat means nothing),
    # so never more than there are operators: 10,000 repeats are a 422, not 10,000 entries.
    operators: tuple[AugmentationOperator, ...] = Field(
        default=(
            AugmentationOperator.WORDNET_SYNONYM,
            AugmentationOperator.EMBEDDING_SYNONYM,
            AugmentationOperator.RANDOM_INSERTION,
            AugmentationOperator.RANDOM_SWAP,
            AugmentationOperator.RANDOM_DELETION,
        ),
        max_length=len(AugmentationOperator),
    )
    max_augmentations_per_example: int = Field(default=2, ge=0, le=16)
    max_strength: float = Field(
        default=0.3, gt=0, le=1, description="Largest fraction of words an operator may touch."
    )

    @field_validator("operators")
    @classmethod
    def _each_operator_once(
        cls, operators: tuple[AugmentationOperator, ...]
    ) -> tuple[AugmentationOperator, ...]:
        seen: set[AugmentationOperator] = set()
        for op in operators:
            if op in seen:
                raise ValueError(f"duplicate operator {op.value!r}: list each operator once")
            seen.add(op)
        return operators


class AcquisitionStrategy(StrEnum):
    ENTROPY = "entropy"
    MARGIN = "margin"
    RANDOM = "random"


class TalConfig(StrictModel):
    """Transfer-active learning with semi-supervised pseudo-labels (paper eq. 2)."""

    enabled: bool = True
    strategy: AcquisitionStrategy = AcquisitionStrategy.ENTROPY
    rounds: int = Field(default=3, ge=1, le=50)
    initial_fraction: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Share of the label budget spent on a random seed set before querying.",
    )
    pseudo_label_threshold: float = Field(default=0.9, ge=0.5, le=1)
    consistency_weight: float = Field(
        default=1.0, ge=0, le=100, description="The paper's λ in L_TAL = L_TL + λ L_AL."
    )


class PruningMode(StrEnum):
    STRUCTURED = "structured"
    UNSTRUCTURED = "unstructured"


class AipConfig(StrictModel):
    """Adaptive iterative pruning (paper eq. 3)."""

    enabled: bool = True
    mode: PruningMode = PruningMode.STRUCTURED
    target_head_sparsity: float = Field(default=0.5, ge=0, lt=1)
    target_ffn_sparsity: float = Field(default=0.5, ge=0, lt=1)
    target_weight_sparsity: float = Field(
        default=0.8, ge=0, lt=1, description="Unstructured mode only."
    )
    initial_step: float = Field(
        default=0.1, gt=0, le=1, description="First pruning step, as a fraction of the target."
    )
    accuracy_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The paper's T; defaults to targets.max_accuracy_drop.",
    )


class QuantRuntime(StrEnum):
    AUTO = "auto"
    ONNX = "onnxruntime"
    TORCH = "torch"


class SqdConfig(StrictModel):
    """Synergistic quantization and distillation (paper eq. 4): L_SQD = L_Q + α L_KD."""

    enabled: bool = True
    # 48: the depth of the deepest common encoder checkpoints (DeBERTa-v2 xxlarge); the SQD
    # stage refuses more layers than the teacher has, but only on a worker after loading it.
    student_layers: int | None = Field(
        default=None, ge=1, le=48, description="None = half the teacher's layers, rounded up."
    )
    temperature: float = Field(default=2.0, gt=0, le=20)
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the distillation term.")
    hidden_weight: float = Field(default=1.0, ge=0, le=100)
    relation_weight: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Weight of MiniLMv2 self-attention relation distillation (the teacher's "
        "last layer's Q-Q, K-K and V-V token relations into the student's last layer); 0 = off.",
    )
    qat: bool = True
    runtime: QuantRuntime = QuantRuntime.AUTO
    prune_vocabulary: bool = False
    freeze_word_embeddings: bool = Field(
        default=True,
        description="Keep the student's word embeddings as the teacher's. Their dense gradient "
        "and optimizer update over the whole vocabulary were more than half of a 3-layer "
        "student's step on a CPU; frozen, the same time trains twice the epochs.",
    )


class Int4Config(StrictModel):
    """Int4 weight-only quantization of the ONNX artifact (MatMulNBits, GatherBlockQuantized).

    At export, the student's linear layers (`matmuls`) and/or its embedding tables
    (`embeddings`) are stored in 4 bits in blocks of `block_size` weights with one scale each;
    the rest (and the classifier) stays int8. The file keeps its name (`model.int8.onnx`) and
    is served as before; ONNX Runtime measures it.
    """

    enabled: bool = False
    matmuls: bool = Field(default=True, description="The encoder's weight matrices in 4 bits.")
    embeddings: bool = Field(
        default=False,
        description="The embedding tables in 4 bits: in a small student the word embeddings "
        "are most of the file, so this halves their share; the matrices can stay int8.",
    )
    block_size: Literal[16, 32, 64, 128, 256] = 32
    symmetric: bool = Field(default=True, description="No zero point: one scale per block.")
    accuracy_level: int = Field(
        default=0,
        ge=0,
        le=4,
        description="MatMulNBits' activation compute type: 0 the kernel's default, 4 int8.",
    )

    @model_validator(mode="after")
    def _something_to_quantize(self) -> Self:
        if self.enabled and not (self.matmuls or self.embeddings):
            raise ValueError("techniques.int4 is enabled with neither matmuls nor embeddings")
        return self


class Techniques(StrictModel):
    ada: AdaConfig = AdaConfig()
    tal: TalConfig = TalConfig()
    aip: AipConfig = AipConfig()
    sqd: SqdConfig = SqdConfig()
    int4: Int4Config = Int4Config()


class ControllerConfig(StrictModel):
    """Synergy Controller (paper eq. 5): min L_task + λ1 R_data + λ2 R_model."""

    lambda1: float = Field(default=0.5, ge=0, le=10)
    lambda2: float = Field(default=0.5, ge=0, le=10)
    adaptive: bool = True


class JobSpec(StrictModel):
    """One compression job.

    `base_model` is a built-in name (see `sec_engine.models.registry`), an uploaded model's id
    (service only), a local directory (CLI only) or a hub id for users with hub access.
    `dataset`, `validation_dataset` and `unlabelled_dataset` are dataset ids in the service and
    file paths in the CLI; the caller resolves them to files before the engine runs.

    `dry_run: true` asks for the plan instead of the model: the job reads the data, loads the
    model and calibrates this device as a real job would, reports the same `plan` event (and
    `budget.too_small` when no useful plan fits), then ends `succeeded` with the plan under
    `metrics` and no artifact. It costs the calibration (about half a minute), not the budget.
    """

    base_model: str = Field(default="minilm-l6", min_length=1, max_length=512)
    dataset: str = Field(min_length=1, max_length=1024)
    validation_dataset: str | None = Field(default=None, max_length=1024)
    unlabelled_dataset: str | None = Field(default=None, max_length=1024)
    task: Task = Task.SEQUENCE_CLASSIFICATION
    budget: Budget = Budget()
    targets: Targets = Targets()
    training: TrainingConfig = TrainingConfig()
    split: DataSplit = DataSplit()
    techniques: Techniques = Techniques()
    controller: ControllerConfig = ControllerConfig()
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dry_run: bool = Field(
        default=False,
        description="Plan only: calibrate on the job's device and report the plan (steps and "
        "predicted minutes per phase, whether it fits the budget) without training; the job "
        "ends succeeded with the plan in its metrics and no artifact.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        t = self.techniques
        if t.ada.enabled and not t.ada.operators:
            raise ValueError("techniques.ada is enabled but lists no operators")
        if self.budget.label_budget < 1.0 and not t.tal.enabled:
            # Without TAL there is nothing that chooses which labels to spend; a random subset
            # would silently be a different experiment than the user asked for.
            raise ValueError(
                "budget.label_budget < 1 needs techniques.tal.enabled (TAL spends the label budget)"
            )
        return self
