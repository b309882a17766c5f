"""The teacher-phase checkpoint: saved by a run with checkpoint_dir, used by the next run of the
same spec on the same inputs (teacher training skipped), ignored when it does not match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from sec_engine import checkpoint
from sec_engine.callbacks import Phase
from sec_engine.pipeline import prepare_state, run_job
from sec_engine.reporting import Reporter
from sec_engine.result import EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from sec_engine.stages import tal as tal_stage
from sec_engine.training import Deadline
from tests.doubles import RecordingCallbacks
from tests.sec_engine.conftest import write_sentiment_csv

pytestmark = pytest.mark.unit

OFF = {"enabled": False}


def _spec(data: Path, **over: Any) -> JobSpec:
    base: dict[str, Any] = {
        "base_model": "unused",
        "dataset": str(data),
        "budget": {"label_budget": 0.7},
        "training": {
            "batch_size": 16,
            "max_seq_len": 32,
            "teacher_epochs": 2,
            "student_epochs": 1,
            "eval_every_steps": 8,
            "learning_rate": 1e-3,
        },
        "targets": {"latency_batch_size": 4, "latency_seq_len": 16},
        # TAL on: its rounds, pseudo-label and distill sets must survive the checkpoint.
        "techniques": {"ada": OFF, "tal": {"rounds": 2}, "aip": OFF, "sqd": OFF},
    }
    base.update(over)
    return JobSpec.model_validate(base)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentiment_csv(tmp_path_factory.mktemp("ckpt") / "train.csv", 120, unlabelled=30)


def _run(
    spec: JobSpec, model: Path, data: Path, out: Path, ckpt: Path
) -> tuple[EngineResult, RecordingCallbacks]:
    cb = RecordingCallbacks()
    inputs = ResolvedInputs(model=str(model), train_path=data)
    return run_job(spec, inputs, out, cb, checkpoint_dir=ckpt), cb


def _kinds(cb: RecordingCallbacks) -> list[str]:
    return [kind for kind, _, _ in cb.events]


def _event(cb: RecordingCallbacks, kind: str) -> dict[str, Any]:
    return next(data for k, _, data in cb.events if k == kind)


@pytest.fixture(scope="module")
def saved(
    tiny_bert_dir: Path, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, EngineResult, RecordingCallbacks]:
    """One run with a checkpoint dir: its checkpoint (tests copy it), result and callbacks."""
    root = tmp_path_factory.mktemp("saved")
    result, cb = _run(_spec(data), tiny_bert_dir, data, root / "out", root / "ckpt")
    return root / "ckpt", result, cb


def _copy(saved_ckpt: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(saved_ckpt, target)
    return target


def _no_teacher_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the teacher was trained again")

    monkeypatch.setattr(tal_stage, "fine_tune", refuse)
    monkeypatch.setattr("sec_engine.pipeline.fine_tune", refuse)


def test_second_run_resumes_from_the_teacher_checkpoint(
    saved: tuple[Path, EngineResult, RecordingCallbacks],
    tiny_bert_dir: Path,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved_ckpt, first, cb1 = saved
    assert "checkpoint.saved" in _kinds(cb1)
    assert "checkpoint.resumed" not in _kinds(cb1)
    assert _event(cb1, "checkpoint.saved")["size_bytes"] > 0
    assert {p.name for p in (saved_ckpt / checkpoint.PHASE_DIR).iterdir()} == {
        checkpoint.META_NAME,
        checkpoint.WEIGHTS_NAME,
        checkpoint.ARRAYS_NAME,
    }
    assert [p.name for p in saved_ckpt.iterdir()] == [checkpoint.PHASE_DIR]  # no temp folder

    ckpt = _copy(saved_ckpt, tmp_path)
    _no_teacher_training(monkeypatch)
    second, cb2 = _run(_spec(data), tiny_bert_dir, data, tmp_path / "out2", ckpt)
    kinds = _kinds(cb2)
    assert "checkpoint.resumed" in kinds
    assert "checkpoint.saved" not in kinds
    assert kinds.index("checkpoint.resumed") < kinds.index("teacher.done")
    assert _event(cb2, "teacher.done")["resumed"] is True
    assert _event(cb2, "teacher.done")["validation"] == _event(cb1, "teacher.done")["validation"]

    m1, m2 = first.manifest, second.manifest
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text()) == json.loads(
        json.dumps(m2)
    )
    assert m2["labels_used"] == m1["labels_used"] < m2["labels_available"]
    # The restored teacher is the trained one: the same predictions on the held-out test split.
    for key in ("accuracy", "macro_f1", "perplexity"):
        assert m2["teacher"][key] == m1["teacher"][key]
    # TAL's report (rounds, pseudo-labels, distill rows) and the controller's decision count
    # include the teacher phase as if it had run.
    assert m2["techniques"]["tal"] == m1["techniques"]["tal"]
    rounds = len(m2["techniques"]["tal"]["plan"])  # the seed set, then the 2 acquisition rounds
    assert len(m2["techniques"]["tal"]["rounds"]) == rounds == 3
    assert m2["techniques"]["tal"]["distill_rows"] > 0
    assert m2["controller"]["decisions"] == m1["controller"]["decisions"]
    teacher_rows = [r.to_dict() for r in cb2.rows if r.phase == Phase.TEACHER]
    assert teacher_rows == [r.to_dict() for r in cb1.rows if r.phase == Phase.TEACHER]
    assert len(teacher_rows) == rounds
    # The RNG states were restored too (dropout draws from torch's), so compression learnt the
    # same student: the same validation cross-entropy to the last digit, not only accuracy.
    for key in ("accuracy", "perplexity"):
        assert m2["compressed"][key] == m1["compressed"][key]


def test_a_checkpoint_of_another_spec_is_ignored(
    saved: tuple[Path, EngineResult, RecordingCallbacks],
    tiny_bert_dir: Path,
    data: Path,
    tmp_path: Path,
) -> None:
    ckpt = _copy(saved[0], tmp_path)
    _, cb = _run(_spec(data, seed=2), tiny_bert_dir, data, tmp_path / "out", ckpt)
    assert "checkpoint.resumed" not in _kinds(cb)
    assert "another spec" in _event(cb, "checkpoint.ignored")["reason"]
    assert _event(cb, "teacher.done")["resumed"] is False
    assert "checkpoint.saved" in _kinds(cb)  # replaced by this spec's
    meta = json.loads((ckpt / checkpoint.PHASE_DIR / checkpoint.META_NAME).read_text())
    stored = json.loads((saved[0] / checkpoint.PHASE_DIR / checkpoint.META_NAME).read_text())
    assert meta["fingerprint"] != stored["fingerprint"]


def test_fingerprint_follows_data_and_model_contents(tiny_bert_dir: Path, tmp_path: Path) -> None:
    path = write_sentiment_csv(tmp_path / "train.csv", 20)
    spec = _spec(path)
    inputs = ResolvedInputs(str(tiny_bert_dir), path)
    model = str(tiny_bert_dir)
    before = checkpoint.input_fingerprint(spec, inputs, model)
    assert checkpoint.input_fingerprint(spec, inputs, model) == before
    write_sentiment_csv(path, 20, seed=3)  # same path and spec, other rows
    after_data = checkpoint.input_fingerprint(spec, inputs, model)
    assert after_data != before
    other_model = shutil.copytree(tiny_bert_dir, tmp_path / "model")
    (other_model / "config.json").write_text(
        (other_model / "config.json").read_text().replace('"hidden_act"', '"hidden_act" ', 1)
    )
    assert checkpoint.input_fingerprint(spec, inputs, str(other_model)) != after_data


@pytest.mark.parametrize("damage", ["json", "weights", "missing_file"])
def test_a_damaged_checkpoint_is_ignored(
    saved: tuple[Path, EngineResult, RecordingCallbacks],
    tiny_bert_dir: Path,
    data: Path,
    tmp_path: Path,
    damage: str,
) -> None:
    ckpt = _copy(saved[0], tmp_path)
    folder = ckpt / checkpoint.PHASE_DIR
    if damage == "json":
        (folder / checkpoint.META_NAME).write_text('{"format": 1, "fingerp')
    elif damage == "weights":
        raw = bytearray((folder / checkpoint.WEIGHTS_NAME).read_bytes())
        raw[-8:] = b"\xff" * 8
        (folder / checkpoint.WEIGHTS_NAME).write_bytes(bytes(raw))
    else:
        (folder / checkpoint.ARRAYS_NAME).unlink()

    second, cb = _run(_spec(data), tiny_bert_dir, data, tmp_path / "out", ckpt)
    assert "checkpoint.resumed" not in _kinds(cb)
    assert _event(cb, "checkpoint.ignored")["reason"]
    assert _event(cb, "teacher.done")["resumed"] is False
    assert second.manifest["techniques"]["tal"] == saved[1].manifest["techniques"]["tal"]


def test_unfitting_weights_are_refused_before_anything_changes(
    saved: tuple[Path, EngineResult, RecordingCallbacks],
    tiny_bert_dir: Path,
    data: Path,
    tmp_path: Path,
) -> None:
    """A checkpoint refused at restore time changes nothing, so the teacher trains as usual."""
    spec = _spec(data)
    inputs = ResolvedInputs(str(tiny_bert_dir), data)
    (out := tmp_path / "out").mkdir()
    state, stages = prepare_state(spec, inputs, Reporter(RecordingCallbacks(), out), Deadline(60.0))
    loaded = checkpoint.load_teacher(
        saved[0], checkpoint.input_fingerprint(spec, inputs, state.model_source)
    )
    assert loaded is not None
    name = next(iter(loaded.weights))
    loaded.weights[name] = loaded.weights[name][..., :1].contiguous()

    before = {k: v.clone() for k, v in state.teacher.state_dict().items()}
    with pytest.raises(checkpoint.CheckpointInvalid, match="do not fit"):
        checkpoint.restore_teacher(state, stages, loaded)
    assert state.labelled == []  # as TAL's initialize left it: nothing bought yet
    assert all(torch.equal(state.teacher.state_dict()[k], v) for k, v in before.items())
    assert next(s for s in stages if s.name == "tal").report()["rounds"] == []
    assert state.reporter.rows == []


def test_without_a_checkpoint_dir_nothing_is_saved(
    tiny_bert_dir: Path, data: Path, tmp_path: Path
) -> None:
    spec = _spec(data, training={**_spec(data).training.model_dump(), "teacher_epochs": 1})
    cb = RecordingCallbacks()
    run_job(spec, ResolvedInputs(str(tiny_bert_dir), data), tmp_path / "out", cb)
    assert not any(k.startswith("checkpoint.") for k in _kinds(cb))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_write_is_reported_and_leaves_no_checkpoint(
    tiny_bert_dir: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while saving: `checkpoint.failed`, the job goes on, no partial folder."""
    spec = _spec(data)
    inputs = ResolvedInputs(str(tiny_bert_dir), data)
    (out := tmp_path / "out").mkdir()
    cb = RecordingCallbacks()
    state, stages = prepare_state(spec, inputs, Reporter(cb, out), Deadline(60.0))

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_arrays", disk_full)
    root = tmp_path / "ckpt"
    checkpoint.save_teacher(root, state, stages, fingerprint="f", trained_by="x", validation={})
    assert _event(cb, "checkpoint.failed")["phase"] == "teacher"
    assert "No space left" in next(m for k, m, _ in cb.events if k == "checkpoint.failed")
    assert list(root.iterdir()) == []  # the temporary folder went too
    assert checkpoint.load_teacher(root, "f") is None


def test_a_spec_that_changes_only_compression_reuses_the_teacher(
    saved: tuple[Path, EngineResult, RecordingCallbacks],
    tiny_bert_dir: Path,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt = _copy(saved[0], tmp_path)
    _no_teacher_training(monkeypatch)
    other = _spec(
        data,
        targets={"latency_batch_size": 4, "latency_seq_len": 16, "max_accuracy_drop": 0.05},
        controller={"adaptive": False},
        techniques={"ada": OFF, "tal": {"rounds": 2}, "aip": OFF, "sqd": {"student_layers": 1}},
    )
    _, cb = _run(other, tiny_bert_dir, data, tmp_path / "out", ckpt)
    assert "checkpoint.resumed" in _kinds(cb)


def test_the_teacher_view_keeps_what_the_teacher_depends_on() -> None:
    base = _spec(Path("d.csv"))
    view = checkpoint.teacher_spec_view(base)
    assert view["techniques"] == {"tal": base.techniques.tal.model_dump(mode="json")}
    assert "student_epochs" not in view["training"]
    assert view["training"]["teacher_epochs"] == 2
    for change in (
        {"seed": 3},
        {"budget": {"label_budget": 0.5}},
        {"techniques": {"ada": OFF, "tal": {"rounds": 3}, "aip": OFF, "sqd": OFF}},
    ):
        assert checkpoint.teacher_spec_view(_spec(Path("d.csv"), **change)) != view


def test_fingerprint_ignores_where_the_inputs_are(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """A retry on another machine downloads the same model and data into its own folder, and
    the service's spec names them by id: the fingerprint must still match."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = write_sentiment_csv(tmp_path / "a" / "train.csv", 20)
    elsewhere = tmp_path / "b" / "ds_123.csv"
    shutil.copy(path, elsewhere)
    model_copy = shutil.copytree(tiny_bert_dir, tmp_path / "other-machine" / "model")
    here = checkpoint.input_fingerprint(
        _spec(path), ResolvedInputs(str(tiny_bert_dir), path), str(tiny_bert_dir)
    )
    there = checkpoint.input_fingerprint(
        _spec(elsewhere, base_model="mdl_abc"),
        ResolvedInputs(str(model_copy), elsewhere),
        str(model_copy),
    )
    assert here == there
