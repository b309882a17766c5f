"""A loaded model: an ONNX Runtime session, its encoder and its labels.

Only two kinds of files are ever read: the ONNX graph (protobuf, no code) and JSON /
tokenizer.json. The HF safetensors copy is for users who download the artifact; the server
does not need it. `predict` is blocking and runs in the serving thread pool, never on the
event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from app.serving.encoder import TextEncoder, TextInput, read_json
from app.serving.errors import ModelLoadError

DEFAULT_ONNX = "model.int8.onnx"
DEFAULT_MODEL_DIR = "model"
_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
# ORT's own heap and per-run buffers on top of the weights, for the cache's memory estimate.
RUNTIME_OVERHEAD_BYTES = 32 * 1024 * 1024
# Length grouping inside a batch (see `length_groups`).
GROUP_GROWTH = 1.25
GROUP_SLACK = 4


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


def _relative(manifest_files: Mapping[str, Any], key: str, default: str) -> str:
    value = manifest_files.get(key)
    name = value if isinstance(value, str) and value else default
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ModelLoadError(f"manifest files.{key} must be a relative path, got {name!r}")
    return path.as_posix()


def resolve_labels(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The class names in logit order: the manifest's `labels`, else config.json's id2label."""
    labels = manifest.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
        return [str(x) for x in labels]
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


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Indices grouped into runs of similar length, each run one ONNX call.

    A micro-batch mixes requests of any length, and padding all of them to the longest
    makes the short ones pay for it (attention is quadratic in it): on Rotten Tomatoes
    snippets (median 27 tokens, 1% over 230) a padded batch of 8 cost 60% more per input
    than one input at a time. Sorted by length and cut where the length grows by more than
    `GROUP_GROWTH` (plus a few tokens of slack), the padding stays small, and the call
    overhead is still shared by the inputs of a group.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= lengths[groups[-1][0]] * GROUP_GROWTH + GROUP_SLACK:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class LoadedModel:
    def __init__(self, session: Any, encoder: TextEncoder, labels: list[str], nbytes: int) -> None:
        self.session = session
        self.encoder = encoder
        self.labels = labels
        self.nbytes = nbytes

    def probabilities(self, inputs: Sequence[TextInput]) -> npt.NDArray[np.float64]:
        encodings = self.encoder.tokenize(inputs)
        parts: list[tuple[list[int], npt.NDArray[np.float64]]] = []
        for rows in length_groups([len(e.ids) for e in encodings]):
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
        return [
            Prediction(
                label=self.labels[int(row.argmax())],
                probabilities={name: float(p) for name, p in zip(self.labels, row, strict=True)},
            )
            for row in probs
        ]


def load_model(artifact_dir: Path, manifest: Mapping[str, Any], *, threads: int) -> LoadedModel:
    """Open the artifact's ONNX model and tokenizer and run one dummy batch through them."""
    import onnxruntime as ort  # deferred: a process that never serves does not pay for it

    files = manifest.get("files")
    files = files if isinstance(files, Mapping) else {}
    # `onnx_int8` is the engine's key; `onnx` lets an fp32 model (the bench's teacher) be
    # served from an artifact of the same layout.
    onnx_name = _relative(files, "onnx_int8" if files.get("onnx_int8") else "onnx", DEFAULT_ONNX)
    model_dir = artifact_dir / _relative(files, "tokenizer", DEFAULT_MODEL_DIR)
    onnx_path = artifact_dir / onnx_name
    if onnx_path.suffix != ".onnx" or not onnx_path.is_file():
        raise ModelLoadError(f"the artifact has no ONNX model at {onnx_name}")

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads spin-wait by default, burning the cores the event loop, the tokenizer
    # and other models need between batches; the wake-up cost is small next to a batch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
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
    labels = resolve_labels(manifest, read_json(model_dir / "config.json"))
    tokenizer_bytes = (model_dir / "tokenizer.json").stat().st_size
    nbytes = onnx_path.stat().st_size + tokenizer_bytes + RUNTIME_OVERHEAD_BYTES
    model = LoadedModel(session, encoder, labels, nbytes)

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
