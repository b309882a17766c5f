"""run_job end to end on a tiny random-init BERT: real training, export, evaluation, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sec_engine.callbacks import Phase
from sec_engine.errors import DatasetError, JobCancelled, ModelLoadError
from sec_engine.pipeline import run_job
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec
from tests.doubles import RecordingCallbacks

pytestmark = pytest.mark.unit

OFF = {"enabled": False}


def _spec(data: Path, **over) -> JobSpec:
    base = {
        "base_model": "unused",
        "dataset": str(data),
        "training": {
            "batch_size": 16,
            "max_seq_len": 32,
            "teacher_epochs": 6,
            "student_epochs": 2,
            "eval_every_steps": 10,
            "learning_rate": 1e-3,
        },
        "targets": {"latency_batch_size": 4, "latency_seq_len": 16},
        "techniques": {"ada": OFF, "tal": OFF, "aip": OFF, "sqd": OFF},
    }
    base.update(over)
    return JobSpec.model_validate(base)


def test_minimal_run_writes_a_loadable_artifact(
    tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    spec = _spec(sentiment_csv)
    cb = RecordingCallbacks()
    out = tmp_path / "out"
    result = run_job(
        spec, ResolvedInputs(model=str(tiny_bert_dir), train_path=sentiment_csv), out, cb
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    for key in ("accuracy", "macro_f1", "perplexity", "size_mb", "latency_ms_per_batch"):
        assert key in manifest["teacher"]
        assert key in manifest["compressed"]
    lat = manifest["compressed"]["latency"]
    assert (lat["batch_size"], lat["seq_len"]) == (4, 16)
    assert lat["threads"] >= 1
    assert manifest["labels_used"] == manifest["labels_available"] > 0
    assert set(manifest["sha256"]) == {f.path for f in result.files}
    assert "model/model.safetensors" in manifest["sha256"]
    assert "model.int8.onnx" in manifest["sha256"]
    assert manifest["targets_met"].keys() == {"max_accuracy_drop"}

    # The HF copy loads with plain transformers, the int8 ONNX file runs in onnxruntime, and
    # both classify a pair of polar sentences; the teacher learnt the toy task.
    assert manifest["teacher"]["accuracy"] > 0.8
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    enc = tok(
        ["a great superb film", "an awful dull plot and boring acting"],
        padding=True,
        return_tensors="np",
    )
    sess = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: enc[i.name].astype("int64") for i in sess.get_inputs()}
    onnx_pred = sess.run(None, feed)[0].argmax(1)
    torch_pred = (
        model(
            **tok(
                ["a great superb film", "an awful dull plot and boring acting"],
                padding=True,
                return_tensors="pt",
            )
        )
        .logits.argmax(1)
        .numpy()
    )
    assert list(onnx_pred) == list(torch_pred)
    assert model.config.id2label[int(torch_pred[0])] == "pos"

    phases = [p for p, _ in cb.progress_log]
    assert phases[0] == Phase.PREPARING
    assert phases[-1] == Phase.EXPORTING
    assert cb.progress_log[-1][1] == 1.0
    assert any(kind == "teacher.done" for kind, _, _ in cb.events)
    assert (out / "events.jsonl").read_text().count("\n") == len(cb.events)


def test_cancellation_raises(tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path) -> None:
    cb = RecordingCallbacks()
    cb.cancel_requested = True
    with pytest.raises(JobCancelled):
        run_job(
            _spec(sentiment_csv),
            ResolvedInputs(model=str(tiny_bert_dir), train_path=sentiment_csv),
            tmp_path,
            cb,
        )


def test_bad_inputs_raise_engine_errors(
    tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly one class,a\nstill one,a\n")
    with pytest.raises(DatasetError):
        run_job(
            _spec(bad),
            ResolvedInputs(model=str(tiny_bert_dir), train_path=bad),
            tmp_path / "o1",
            RecordingCallbacks(),
        )
    with pytest.raises(ModelLoadError):
        run_job(
            _spec(sentiment_csv),
            ResolvedInputs(model=str(tmp_path / "nowhere"), train_path=sentiment_csv),
            tmp_path / "o2",
            RecordingCallbacks(),
        )
