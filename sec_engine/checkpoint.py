"""The teacher-phase checkpoint: what the teacher phase produced, so a retried job skips it.

The teacher phase is the costliest part of a job (about 60 % of the budget on the MiniLM
runs), so a job whose worker was killed after it resumes from here on its next attempt. The
compression phase is not checkpointed: a resumed attempt runs data, compression, evaluation
and export again from the restored teacher.

What is saved, in ``<checkpoint_dir>/teacher/``:

- ``teacher.safetensors``  the teacher's weights (safetensors only: nothing here is a pickle);
- ``arrays.safetensors``   numeric state: soft sets the stages made (their token ids, soft
                           targets and weights) and the RNG states;
- ``checkpoint.json``      the input fingerprint, the labelled row indices, the teacher's
                           validation metrics, which stage trained it, each stage's
                           ``checkpoint_state`` (TAL: its rounds, pseudo-label and distill sets),
                           the teacher phase's trace rows, and the sha256 of the two files above.

A checkpoint is used only when its fingerprint matches: the sha256 of the canonical spec JSON,
the base model's files and every input data file (the split follows from those and the seed).
A missing, partial, corrupt or mismatched checkpoint is reported as ``checkpoint.ignored``
with the reason and the teacher is trained as usual; it never fails a job.

Writes are atomic: everything goes into a temporary folder next to ``teacher/``, which is then
renamed into place, so a kill mid-write leaves either no checkpoint or a whole one.

Restoring puts back the RNG states (torch, numpy, Python, the state's generator) as they were
at the end of the teacher phase, and replays its trace rows, so the later phases and the
manifest (labels used, ``techniques``, controller decisions) are what an uninterrupted run
would give, up to wall-clock effects.

Budget on a resumed attempt: every attempt makes its own plan and has its own wall-clock cap;
the restored teacher replaces the planned teacher steps, and the later phases run theirs.

What identifies a checkpoint is the teacher's part of the spec (`teacher_spec_view`) plus
the model and data files, so a spec that changes only the compression side (student,
pruning, targets, controller, augmentation) resumes from the teacher it trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file as load_tensors
from safetensors.torch import save_file as save_tensors

from sec_engine.artifact_contract.files import sha256_file
from sec_engine.callbacks import Phase, TraceRow
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec
from sec_engine.stages.base import EngineState, SoftSet, Stage

FORMAT_VERSION = 2  # 2: the fingerprint follows contents, not paths
PHASE_DIR = "teacher"
META_NAME = "checkpoint.json"
WEIGHTS_NAME = "teacher.safetensors"
ARRAYS_NAME = "arrays.safetensors"
_TMP_PREFIX = ".teacher-tmp-"
_SOFT_SET = "$soft_set"  # marks a SoftSet value of a stage's checkpoint_state in the JSON


class CheckpointInvalid(Exception):
    """The checkpoint cannot be used; the message says why (it goes into the event)."""


@dataclass
class TeacherCheckpoint:
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    arrays: dict[str, np.ndarray]


_INPUT_REFERENCES = ("base_model", "dataset", "validation_dataset", "unlabelled_dataset")


def teacher_spec_view(spec: JobSpec) -> dict[str, Any]:
    """The parts of a spec that decide the teacher phase: base model, data and split, seed,
    device, the label budget, TAL and the teacher's training settings. Compression, targets,
    the controller, ADA (which runs after the teacher) and the time budget are left out, so a
    spec that changes only those reuses the teacher it trained."""
    d = spec.model_dump(mode="json")
    # Where the model and the data are (paths, ids) is not what they are: their contents are
    # hashed in `input_fingerprint`, so a retry on another machine, which downloads them into
    # its own folder, still matches.
    for key in ("targets", "controller", *_INPUT_REFERENCES):
        d.pop(key)
    d["techniques"] = {"tal": d["techniques"]["tal"]}
    d["budget"] = {"label_budget": d["budget"]["label_budget"]}
    d["training"] = {k: v for k, v in d["training"].items() if not k.startswith("student_")}
    return d


def input_fingerprint(spec: JobSpec, inputs: ResolvedInputs, model_source: str) -> str:
    """sha256 over what decides the teacher phase: the teacher's part of the spec
    (`teacher_spec_view`), the model files, the data files."""
    source = Path(model_source)
    model_files = (
        {
            p.relative_to(source).as_posix(): sha256_file(p)
            for p in sorted(source.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
        if source.is_dir()
        else None  # a hub id: its name is all we know
    )
    data = {
        "train": inputs.train_path,
        "validation": inputs.validation_path,
        "unlabelled": inputs.unlabelled_path,
    }
    payload = {
        "format": FORMAT_VERSION,
        "spec": teacher_spec_view(spec),
        # A folder is known by its files; a name (built-in or hub id) by the name.
        "model": {"ref": None if model_files is not None else inputs.model, "files": model_files},
        "data": {k: None if p is None else sha256_file(p) for k, p in data.items()},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- writing ------------------------------------------------------------------------------------


def _write(root: Path, state: EngineState, stages: list[Stage], head: dict[str, Any]) -> int:
    """Write the checkpoint atomically (`head`: its fingerprint and teacher summary); returns
    its size in bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):  # a write killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        weights = {
            k: v.detach().to("cpu").clone().contiguous()  # clone: tied weights become separate
            for k, v in state.teacher.state_dict().items()
        }
        save_tensors(weights, str(tmp / WEIGHTS_NAME))
        arrays: dict[str, np.ndarray] = {}
        meta = {
            **head,
            "format": FORMAT_VERSION,
            "saved_at": time.time(),
            "labelled": [int(i) for i in state.labelled],
            "teacher_val_accuracy": state.teacher_val_accuracy,
            "lambda": [state.lambda1, state.lambda2],
            "soft_sets": [
                _put_soft_set(arrays, f"state.{i}", s) for i, s in enumerate(state.soft_sets)
            ],
            "stages": {s.name: _encode_stage(arrays, s) for s in stages},
            "rng": _rng_state(arrays, state),
            "trace": [r.to_dict() for r in state.reporter.rows if r.phase == Phase.TEACHER],
        }
        save_arrays(arrays, str(tmp / ARRAYS_NAME))
        meta["files"] = {name: sha256_file(tmp / name) for name in (WEIGHTS_NAME, ARRAYS_NAME)}
        (tmp / META_NAME).write_text(json.dumps(meta), encoding="utf-8")
        for name in (WEIGHTS_NAME, ARRAYS_NAME, META_NAME):
            _fsync(tmp / name)
        size = sum(p.stat().st_size for p in tmp.iterdir())
        final = root / PHASE_DIR
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(root)
        return size
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_stage(arrays: dict[str, np.ndarray], stage: Stage) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in stage.checkpoint_state().items():
        if isinstance(value, SoftSet):
            out[key] = {_SOFT_SET: _put_soft_set(arrays, f"{stage.name}.{key}", value)}
        else:
            out[key] = value
    return out


def _put_soft_set(arrays: dict[str, np.ndarray], prefix: str, soft: SoftSet) -> dict[str, Any]:
    """A soft set as flat arrays: each feature column concatenated, with per-row lengths."""
    names = list(soft.features[0]) if soft.features else []
    for name in names:
        rows = [f[name] for f in soft.features]
        arrays[f"{prefix}.{name}.values"] = np.array([t for r in rows for t in r], np.int64)
        arrays[f"{prefix}.{name}.lengths"] = np.array([len(r) for r in rows], np.int64)
    arrays[f"{prefix}.targets"] = np.ascontiguousarray(soft.targets, np.float32)
    arrays[f"{prefix}.weights"] = np.ascontiguousarray(soft.weights, np.float32)
    return {"prefix": prefix, "name": soft.name, "columns": names, "rows": len(soft.features)}


def _rng_state(arrays: dict[str, np.ndarray], state: EngineState) -> dict[str, Any]:
    arrays["rng.torch"] = torch.get_rng_state().numpy()
    cuda = torch.cuda.get_rng_state_all() if state.device.type == "cuda" else []
    for i, s in enumerate(cuda):
        arrays[f"rng.cuda.{i}"] = s.numpy()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    arrays["rng.numpy"] = np.asarray(keys)
    version, internal, py_gauss = random.getstate()
    return {
        "cuda": len(cuda),
        "numpy": [kind, int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), py_gauss],
        "state_rng": state.rng.bit_generator.state,
    }


# -- reading ------------------------------------------------------------------------------------


def load_teacher(root: Path, fingerprint: str) -> TeacherCheckpoint | None:
    """The checkpoint under `root`, checked whole; None when there is none."""
    folder = root / PHASE_DIR
    if not (folder / META_NAME).exists():
        return None
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointInvalid(f"unreadable {META_NAME}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CheckpointInvalid("written by another checkpoint format version")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointInvalid("made for another spec, model or dataset")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointInvalid("no file checksums")
    for name in (WEIGHTS_NAME, ARRAYS_NAME):
        path = folder / name
        if not path.is_file() or sha256_file(path) != files.get(name):
            raise CheckpointInvalid(f"{name} is missing or does not match its checksum")
    try:
        weights = load_tensors(str(folder / WEIGHTS_NAME), device="cpu")
        arrays = load_arrays(str(folder / ARRAYS_NAME))
    except Exception as exc:  # safetensors raises its own error types on a bad header
        raise CheckpointInvalid(f"unreadable tensors: {exc}") from exc
    return TeacherCheckpoint(meta=meta, weights=weights, arrays=arrays)


def restore_teacher(
    state: EngineState, stages: list[Stage], ckpt: TeacherCheckpoint
) -> tuple[str, dict[str, float]]:
    """Put the teacher phase's results back into `state` and the stages; returns which stage
    trained the teacher and its validation metrics (for the `teacher.done` event).

    Everything is decoded and checked before the state or the teacher is changed, so a
    checkpoint refused here (CheckpointInvalid) leaves them as they were and the teacher can
    still be trained.
    """
    meta, arrays = ckpt.meta, ckpt.arrays
    try:
        current = state.teacher.state_dict()
        wrong = sorted(
            set(current) ^ set(ckpt.weights)
            | {k for k, v in ckpt.weights.items() if k in current and v.shape != current[k].shape}
        )
        if wrong:
            raise CheckpointInvalid(f"teacher weights do not fit the model (e.g. {wrong[0]})")
        # Stages work in the teacher phase only when the fingerprint covers them (TAL); the
        # others (ADA, AIP, SQD) may differ between the saving and the resuming spec.
        saved_stages = meta["stages"]
        stage_states = {
            s.name: _decode_stage(arrays, saved_stages[s.name])
            for s in stages
            if s.name in saved_stages
        }
        soft_sets = [_get_soft_set(arrays, d) for d in meta["soft_sets"]]
        labelled = [int(i) for i in meta["labelled"]]
        if any(not 0 <= i < len(state.data.train) for i in labelled):
            raise CheckpointInvalid("labelled rows out of range")
        trace = [_trace_row(d) for d in meta["trace"]]
        rng = _decode_rng(arrays, meta["rng"])
        trained_by = str(meta["trained_by"])
        validation = {str(k): float(v) for k, v in meta["validation"].items()}
        teacher_val_accuracy = float(meta["teacher_val_accuracy"])
        # λ is checked but not restored: the teacher phase never moves it, and the resuming
        # spec's controller (outside the fingerprint) decides where it starts.
        [float(x) for x in meta["lambda"]]
        # Stages check what they are given before they keep any of it; they go first so that
        # a refusal leaves the teacher and the state untouched.
        for stage in stages:
            if stage.name in stage_states:
                stage.restore_checkpoint(state, stage_states[stage.name])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointInvalid(f"incomplete checkpoint: {exc!r}") from exc

    with torch.no_grad():
        state.teacher.load_state_dict(ckpt.weights, strict=True)
    state.labelled = labelled
    state.soft_sets = soft_sets
    state.teacher_val_accuracy = teacher_val_accuracy
    for row in trace:
        state.reporter.trace(row)
    _apply_rng(rng, state)
    return trained_by, validation


def _decode_stage(arrays: dict[str, np.ndarray], saved: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _get_soft_set(arrays, v[_SOFT_SET]) if isinstance(v, dict) and _SOFT_SET in v else v
        for k, v in saved.items()
    }


def _get_soft_set(arrays: dict[str, np.ndarray], d: dict[str, Any]) -> SoftSet:
    prefix, n = d["prefix"], int(d["rows"])
    columns: dict[str, list[list[int]]] = {}
    for name in d["columns"]:
        values = arrays[f"{prefix}.{name}.values"].tolist()
        lengths = arrays[f"{prefix}.{name}.lengths"].tolist()
        if len(lengths) != n or sum(lengths) != len(values):
            raise ValueError(f"soft set {prefix}: column {name} does not add up")
        ends = np.cumsum(lengths).tolist()
        columns[name] = [values[e - k : e] for e, k in zip(ends, lengths, strict=True)]
    features = [{name: col[i] for name, col in columns.items()} for i in range(n)]
    targets, weights = arrays[f"{prefix}.targets"], arrays[f"{prefix}.weights"]
    if len(targets) != n or len(weights) != n:
        raise ValueError(f"soft set {prefix}: targets or weights do not match its rows")
    return SoftSet(str(d["name"]), features, targets.copy(), weights.copy())


def _trace_row(d: dict[str, Any]) -> TraceRow:
    """A saved row as the stage first reported it (the reporter numbers it job-wide again)."""
    observation = dict(d["observation"])
    step = int(observation.pop("phase_step", d["step"]))
    return TraceRow(**{**d, "step": step, "phase": Phase(d["phase"]), "observation": observation})


@dataclass
class _RngStates:
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor]
    numpy: tuple[Any, ...]
    python: tuple[Any, ...]
    generator: np.random.Generator


def _decode_rng(arrays: dict[str, np.ndarray], rng: dict[str, Any]) -> _RngStates:
    """The saved RNG states, each tried on a throwaway generator first (so a bad one raises
    here, before anything is restored)."""
    torch_cpu = torch.from_numpy(arrays["rng.torch"].copy())
    if torch_cpu.dtype != torch.uint8 or torch_cpu.shape != torch.get_rng_state().shape:
        raise ValueError("the torch RNG state does not fit this torch")
    cuda = [torch.from_numpy(arrays[f"rng.cuda.{i}"].copy()) for i in range(int(rng["cuda"]))]
    kind, pos, has_gauss, gauss = rng["numpy"]
    numpy_state = (kind, arrays["rng.numpy"].copy(), pos, has_gauss, gauss)
    np.random.RandomState().set_state(numpy_state)
    version, internal, py_gauss = rng["python"]
    python_state = (version, tuple(internal), py_gauss)
    random.Random().setstate(python_state)  # noqa: S311 (a check, not a secret)
    generator = np.random.default_rng()
    generator.bit_generator.state = rng["state_rng"]
    return _RngStates(torch_cpu, cuda, numpy_state, python_state, generator)


def _apply_rng(saved: _RngStates, state: EngineState) -> None:
    torch.set_rng_state(saved.torch_cpu)
    if saved.cuda and state.device.type == "cuda" and torch.cuda.device_count() == len(saved.cuda):
        torch.cuda.set_rng_state_all(saved.cuda)
    np.random.set_state(saved.numpy)
    random.setstate(saved.python)
    state.rng = saved.generator


# -- the pipeline's two calls -------------------------------------------------------------------


def try_resume(
    root: Path, state: EngineState, stages: list[Stage], fingerprint: str
) -> tuple[str, dict[str, float]] | None:
    """Restore the teacher phase from `root` when a matching checkpoint is there; returns
    `restore_teacher`'s answer, or None when the teacher must be trained.

    Reports `checkpoint.resumed`, or `checkpoint.ignored` with the reason; never raises for a
    bad checkpoint.
    """
    try:
        ckpt = load_teacher(root, fingerprint)
        if ckpt is None:
            return None
        restored = restore_teacher(state, stages, ckpt)
    except CheckpointInvalid as exc:
        state.reporter.event(
            "checkpoint.ignored",
            f"teacher checkpoint not used: {exc}",
            {"phase": str(Phase.TEACHER), "reason": str(exc)},
        )
        return None
    state.reporter.event(
        "checkpoint.resumed",
        "teacher restored from the checkpoint of an earlier attempt; its training is skipped",
        {
            "phase": str(Phase.TEACHER),
            "labels_used": len(state.labelled),
            "teacher_val_accuracy": state.teacher_val_accuracy,
            "trace_rows": len(ckpt.meta["trace"]),
            "age_seconds": round(max(0.0, time.time() - float(ckpt.meta.get("saved_at", 0))), 1),
        },
    )
    return restored


def save_teacher(
    root: Path,
    state: EngineState,
    stages: list[Stage],
    *,
    fingerprint: str,
    trained_by: str,
    validation: dict[str, float],
) -> None:
    """Write the checkpoint; a failure (a full disk) is reported and the job goes on."""
    started = time.monotonic()
    try:
        head = {"fingerprint": fingerprint, "trained_by": trained_by, "validation": validation}
        size = _write(root, state, stages, head)
    except OSError as exc:
        state.reporter.event(
            "checkpoint.failed",
            f"teacher checkpoint not written: {exc.strerror or exc}",
            {"phase": str(Phase.TEACHER)},
        )
        return
    state.reporter.event(
        "checkpoint.saved",
        "teacher checkpoint written",
        {
            "phase": str(Phase.TEACHER),
            "size_bytes": size,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
