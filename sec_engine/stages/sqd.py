"""SQD stage: a layer-dropped student trained with L_SQD = L_Q + α·L_KD (paper eq. 4).

- The student keeps `student_layers` of the teacher's layers (default: half, rounded up),
  spread uniformly (DistilBERT / TinyBERT), initialised from those layers.
- L_Q is the task loss of the student under int8 fake quantization (QAT); the compression
  loop computes it. This stage adds α·(KD on temperature-softened logits + `hidden_weight` ×
  hidden-state MSE at matching depths + `relation_weight` × the self-attention relation KL
  of the last layers, MiniLMv2: `sec_engine.compression.relations`).
- Finalize strips QAT (plain Linears with the trained weights) and, when asked, prunes the
  vocabulary to the tokens of the data the job trains on (train, validation, unlabelled,
  augmented; never the test split) and rewrites the tokenizer to emit the new ids. A
  tokenizer that cannot be rewritten (BPE / Unigram) keeps the full vocabulary, with an event.
- The int8 runtime (ONNX Runtime vs torch) is chosen at export by measurement
  (`sec_engine.export.artifact`).
"""

from __future__ import annotations

import copy
import math
import tempfile
from typing import Any

from torch import nn

from sec_engine.compression.qat import prepare_qat, strip_qat
from sec_engine.compression.relations import relation_loss
from sec_engine.compression.sqd_ops import (
    LayerMap,
    hidden_state_loss,
    kd_logit_loss,
    make_hidden_projection,
    make_student,
)
from sec_engine.compression.vocab import prune_vocabulary, write_pruned_tokenizer
from sec_engine.errors import SpecError
from sec_engine.models.arch import get_layers
from sec_engine.spec import SqdConfig
from sec_engine.stages.base import EngineState, LossTerms, Stage, StepContext


class SqdStage(Stage):
    name = "sqd"
    wants_teacher_outputs = True
    is_compression = True

    def __init__(self, config: SqdConfig) -> None:
        self.config = config
        self.wants_hidden_states = config.hidden_weight > 0
        self.layer_map: LayerMap = {}
        self.projection: nn.Linear | None = None
        self.relation_heads = 0
        self.used_ids: set[int] = set()
        self.info: dict[str, Any] = {}

    def initialize(self, state: EngineState) -> None:
        teacher_layers = len(get_layers(state.teacher))
        k = self.config.student_layers or math.ceil(teacher_layers / 2)
        if k > teacher_layers:
            raise SpecError(
                f"techniques.sqd.student_layers={k} but the base model has {teacher_layers} layers"
            )
        self.num_layers = k
        self.info.update({"teacher_layers": teacher_layers, "student_layers": k})
        if self.config.prune_vocabulary:
            for split in ("train", "validation", "unlabelled"):
                for f in state.features[split]:
                    self.used_ids.update(f["input_ids"])

    def student_shape(self, model: nn.Module) -> nn.Module:
        student: Any
        student, _ = make_student(model, self.num_layers, "uniform")
        if self.config.qat:
            prepare_qat(student)
        self._freeze(student)
        shaped: nn.Module = student
        return shaped

    def _freeze(self, student: Any) -> None:
        if self.config.freeze_word_embeddings:
            student.get_input_embeddings().weight.requires_grad_(False)

    def build_student(self, state: EngineState) -> None:
        student: Any
        student, self.layer_map = make_student(state.teacher, self.num_layers, "uniform")
        for p in student.parameters():
            p.requires_grad_(True)
        hidden = int(student.config.hidden_size)
        teacher: Any = state.teacher  # a transformers PreTrainedModel
        self.projection = make_hidden_projection(hidden, int(teacher.config.hidden_size))
        if self.projection is not None:
            self.projection.to(state.device)
        converted = prepare_qat(student) if self.config.qat else 0
        self._freeze(student)
        state.student = student.to(state.device)
        if self.config.relation_weight > 0:
            self.relation_layers = (self.num_layers - 1, len(get_layers(state.teacher)) - 1)
            # MiniLMv2 splits both sides into as many relation heads as the teacher has heads.
            self.relation_heads = int(teacher.config.num_attention_heads)
            self.info["relation_layers"] = list(self.relation_layers)
        self.info.update(
            {"layer_map": {str(k): v for k, v in self.layer_map.items()}, "qat_linears": converted}
        )
        state.reporter.event(
            "sqd.student",
            f"student with {self.num_layers} layers built from the teacher",
            dict(self.info),
        )

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.projection.parameters()) if self.projection is not None else []

    def loss_terms(self, state: EngineState, ctx: StepContext) -> LossTerms:
        assert ctx.teacher_logits is not None
        kd = kd_logit_loss(ctx.student_logits, ctx.teacher_logits, self.config.temperature)
        if self.wants_hidden_states and ctx.student_hidden and ctx.teacher_hidden:
            hid = hidden_state_loss(
                ctx.student_hidden,
                ctx.teacher_hidden,
                self.layer_map,
                attention_mask=ctx.batch.inputs["attention_mask"].to(ctx.student_logits.device),
                projection=self.projection,
            )
            kd = kd + self.config.hidden_weight * hid
        if self.relation_layers is not None:
            if ctx.student_qkv is None or ctx.teacher_qkv is None:
                raise RuntimeError("the compression loop did not capture the relation layers")
            rel = relation_loss(
                ctx.student_qkv,
                ctx.teacher_qkv,
                ctx.batch.inputs["attention_mask"].to(ctx.student_logits.device),
                self.relation_heads,
            )
            kd = kd + self.config.relation_weight * rel
        return LossTerms(task={"kd": self.config.alpha * kd})

    def planned_vocab_size(self) -> int | None:
        return len(self.used_ids) if self.config.prune_vocabulary else None

    def finalize(self, state: EngineState) -> None:
        assert state.student is not None
        self.info["qat_stripped"] = strip_qat(state.student)
        if self.config.prune_vocabulary:
            self._prune_vocabulary(state)

    def _prune_vocabulary(self, state: EngineState) -> None:
        assert state.student is not None
        for soft in state.soft_sets:  # augmented rows are training data too
            for f in soft.features:
                self.used_ids.update(f["input_ids"])
        tok = state.tokenizer
        candidate: Any = copy.deepcopy(state.student)
        old = int(candidate.get_input_embeddings().num_embeddings)
        vmap = prune_vocabulary(
            candidate,
            sorted(self.used_ids),
            special_token_ids=tok.all_special_ids,
            unk_token_id=tok.unk_token_id,
        )
        try:
            with tempfile.TemporaryDirectory(prefix="sec-vocab-") as tmp:
                pruned_tok = write_pruned_tokenizer(tok, vmap, tmp)
        except NotImplementedError as exc:
            self.info["vocabulary"] = {"pruned": False, "reason": str(exc)}
            state.reporter.event("sqd.vocabulary_skipped", str(exc))
            return
        state.student = candidate
        state.student_tokenizer = pruned_tok
        self.info["vocabulary"] = {"pruned": True, "before": old, "after": vmap.new_size}
        state.reporter.event(
            "sqd.vocabulary",
            f"vocabulary pruned from {old} to {vmap.new_size} tokens",
            self.info["vocabulary"],
        )

    def report(self) -> dict[str, Any]:
        return {
            **self.info,
            "temperature": self.config.temperature,
            "alpha": self.config.alpha,
            "hidden_weight": self.config.hidden_weight,
            "relation_weight": self.config.relation_weight,
            "qat": self.config.qat,
            "freeze_word_embeddings": self.config.freeze_word_embeddings,
        }
