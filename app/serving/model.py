"""A loaded model: an ONNX Runtime session, its encoder and its labels.

Only two kinds of files are ever read: the ONNX graph (protobuf, no code) and JSON /
tokenizer.json. The HF safetensors copy is for users who download the artifact; the server
does not need it. `predict` is blocking and runs in the serving thread pool, never on the
event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.serving.encoder import TextEncoder, TextInput, read_json
from app.serving.errors import ModelLoadError
from sec_engine.artifact_contract import Manifest, cpu_session

_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
# ORT's own heap and per-run buffers on top of the weights, for the cache's memory estimate.
RUNTIME_OVERHEAD_BYTES = 32 * 1024 * 1024
# Cutting a batch into ONNX calls (see `plan_batches`).
GROUP_GROWTH = 1.25
GROUP_SLACK = 4
DEFAULT_MAX_BATCH_TOKENS = 8192
MAX_ROWS_PER_CALL = 512


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


def resolve_labels(labels: Sequence[str] | None, config: Mapping[str, Any]) -> list[str]:
    """The class names in logit order: the manifest's `labels`, else config.json's id2label."""
    if labels:
        return list(labels)
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        try:
            pairs = sorted((int(k), str(v)) for k, v in id2label.items())
        except ValueError as exc:
            raise ModelLoadError("config.json id2label has non-integer keys") from exc
        if [i for i, _ in pairs] != list(range(len(pairs))):
            raise ModelLoadError("config.json id2label is not numbered 0..n-1")
        return [name for _, name in pairs]
    raise ModelLoadError("the artifact names no labels (manifest 'labels' or config id2label)")


def plan_batches(lengths: Sequence[int], *, max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices cut into ONNX calls: sorted by length, then cut where a call would exceed
    `max_rows` rows or `max_tokens` padded tokens (rows x its longest sequence), or where the
    length grows by more than `GROUP_GROWTH` (plus a few tokens of slack) over the call's
    shortest input.

    A micro-batch mixes requests of any length, and padding all of them to the longest makes
    the short ones pay for it (attention is quadratic in it): on Rotten Tomatoes snippets
    (median 27 tokens, 1% over 230) a padded batch of 8 cost 60% more per input than one
    input at a time. Grouped by length, the padding stays small and the call overhead is
    still shared by the inputs of a group; the token cap bounds one call's work and memory
    (as TEI's `max_batch_tokens` does). An input longer than `max_tokens` runs alone.
    """
    if max_rows < 1 or max_tokens < 1:
        raise ValueError("max_rows and max_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if groups:
            group = groups[-1]
            shortest = lengths[group[0]]
            if (
                len(group) < max_rows
                and (len(group) + 1) * n <= max_tokens
                and n <= shortest * GROUP_GROWTH + GROUP_SLACK
            ):
                group.append(i)
                continue
        groups.append([i])
    return groups


class LoadedModel:
    """`max_rows` / `max_tokens` bound one ONNX call (see `plan_batches`); the serving manager
    sets `max_rows` from the batch-size curve it measures at load time."""

    def __init__(
        self,
        session: Any,
        encoder: TextEncoder,
        labels: list[str],
        nbytes: int,
        *,
        max_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        self.session = session
        self.encoder = encoder
        self.labels = labels
        self.nbytes = nbytes
        self.max_rows = MAX_ROWS_PER_CALL
        self.max_tokens = max_tokens

    def probabilities(self, inputs: Sequence[TextInput]) -> npt.NDArray[np.float64]:
        """Class probabilities, one row per input: the whole batch tokenised in one call,
        then run as `plan_batches` cuts it."""
        encodings = self.encoder.tokenize(inputs)
        parts: list[tuple[list[int], npt.NDArray[np.float64]]] = []
        plan = plan_batches(
            [len(e.ids) for e in encodings], max_rows=self.max_rows, max_tokens=self.max_tokens
        )
        for rows in plan:
            feeds = self.encoder.pad([encodings[i] for i in rows])
            (out,) = self.session.run(["logits"], feeds)
            parts.append((rows, np.asarray(out, dtype=np.float64)))
        z = np.empty((len(encodings), parts[0][1].shape[1]), dtype=np.float64)
        for rows, values in parts:
            z[rows] = values
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
        return probs

    def predict(self, inputs: Sequence[TextInput]) -> list[Prediction]:
        probs = self.probabilities(inputs)
        labels = self.labels
        return [
            Prediction(labels[int(best)], dict(zip(labels, row, strict=True)))
            for best, row in zip(probs.argmax(axis=1).tolist(), probs.tolist(), strict=True)
        ]


def load_model(
    artifact_dir: Path,
    manifest: Manifest,
    *,
    threads: int,
    max_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> LoadedModel:
    """Open the artifact's ONNX model and tokenizer and run one dummy batch through them."""
    # The contract validated both paths as relative ones inside the artifact.
    onnx_name = manifest.serving_onnx
    model_dir = artifact_dir / manifest.tokenizer_dir
    onnx_path = artifact_dir / onnx_name
    if onnx_path.suffix != ".onnx" or not onnx_path.is_file():
        raise ModelLoadError(f"the artifact has no ONNX model at {onnx_name}")

    try:
        # The same session options as the engine's latency measurement (artifact contract).
        session = cpu_session(onnx_path, threads)
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        raise ModelLoadError(f"ONNX Runtime cannot load {onnx_name}: {exc}") from exc

    input_names = [i.name for i in session.get_inputs()]
    unknown = sorted(set(input_names) - _KNOWN_INPUTS)
    if unknown or "input_ids" not in input_names:
        raise ModelLoadError(
            f"{onnx_name} takes inputs {input_names}; expected input_ids, attention_mask"
            " and optionally token_type_ids"
        )
    if "logits" not in [o.name for o in session.get_outputs()]:
        raise ModelLoadError(f"{onnx_name} has no 'logits' output")

    encoder = TextEncoder.from_dir(model_dir, input_names)
    labels = resolve_labels(manifest.labels, read_json(model_dir / "config.json"))
    tokenizer_bytes = (model_dir / "tokenizer.json").stat().st_size
    nbytes = onnx_path.stat().st_size + tokenizer_bytes + RUNTIME_OVERHEAD_BYTES
    model = LoadedModel(session, encoder, labels, nbytes, max_tokens=max_tokens)

    try:
        probs = model.probabilities(["warm-up", ("warm-up", "pair")])
    except Exception as exc:
        raise ModelLoadError(f"the model fails on a dummy batch: {exc}") from exc
    if probs.shape != (2, len(labels)):
        raise ModelLoadError(
            f"the model returns {probs.shape[1]} logits per input but the artifact names"
            f" {len(labels)} labels"
        )
    return model
