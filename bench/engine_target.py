"""The engine target (docs/DESIGN_NOTES.md#targets): the default SEC job against an fp32
teacher fine-tuned on every label.

    python -m bench.engine_target [--quick] [--spec examples/minilm_rotten_tomatoes.yaml]

One process, one seeded split, in this order:

(a) reference: the base model fine-tuned on ALL training labels by the engine's own teacher
    code (`stages.teacher.fine_tune`, same recipe as the job's teacher: epochs, learning
    rate, batch, max_seq_len, validation-based selection), measured by the engine's own
    `measure_teacher` on the held-out test split;
(b) the SEC job: `sec_engine.pipeline.run_job` on the spec as written (`label_budget: 0.7`);
    its manifest holds the compressed model's metrics, measured by the engine's export code
    on the same test split;
(c) a head-to-head latency check: reference fp32 (the faster of torch and ONNX Runtime) and
    the shipped int8 model timed back to back in interleaved rounds with the engine's timers,
    so load from other processes on the shared machine hits both alike. The speed ratio uses
    these medians; the job's own numbers are reported too.

Writes bench/results/engine_target.json, engine_target.md and engine_target.manifest.json
(the SEC artifact's manifest). `--quick` runs the same flow on a few thousand rows with a
short budget, to check the wiring; its numbers say nothing about the targets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    DEFAULT_SPEC,
    RESULTS,
    ROOT,
    THREADS,
    LoadSampler,
    LogCallbacks,
    machine_info,
    spec_variant,
    split_digest,
)
from sec_engine.artifact_contract import HF_DIR, ONNX_INT8
from sec_engine.callbacks import Phase
from sec_engine.cli import load_spec
from sec_engine.data.encoding import fixed_length_batch
from sec_engine.data.rotten_tomatoes import ensure as ensure_dataset
from sec_engine.data.rotten_tomatoes import write_csv
from sec_engine.data.splits import DataBundle
from sec_engine.evaluation.latency import Latency, time_onnx, time_torch
from sec_engine.export.artifact import Measured, measure_teacher
from sec_engine.export.hf_export import save_hf_model
from sec_engine.export.onnx_export import export_onnx
from sec_engine.export.torch_int8 import quantize_torch_int8
from sec_engine.pipeline import measurement_setup, prepare_state, run_job, seed_everything
from sec_engine.reporting import Reporter
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec, Techniques
from sec_engine.stages.teacher import fine_tune, validation_metrics
from sec_engine.training import Deadline

RUN_DIR = ROOT / "var" / "runs" / "engine_target"
QUICK_ROWS = 3000
QUICK_MINUTES = 6.0
H2H_ROUNDS = 5
TARGETS = {"size_ratio": 8.0, "speed_ratio": 3.0, "accuracy_drop_points": 1.0}
LABEL_SHARE_MAX = 0.7
WALL_MINUTES = 30.0
WALL_TOLERANCE = 1.05  # "about 30 minutes or less"


@dataclass
class Reference:
    measured: Measured
    validation: dict[str, float]
    steps: int
    best_step: int
    labels: int
    wall_seconds: float
    model_dir: Path
    onnx_path: Path
    data: DataBundle


# The reference keeps its best validation checkpoint, evaluated this often. Pinned, not taken
# from the job's spec: `eval_every_steps` is the SEC controller's cadence, and the seed-0
# reference scored 0.8533 evaluated every 50 steps but 0.8306 every 100 (checkpoint selection
# alone), so a controller setting must not weaken the yardstick SEC is judged against.
REFERENCE_EVAL_EVERY_STEPS = 50


def reference_spec(spec: JobSpec) -> JobSpec:
    """The job's spec with every technique off and every label allowed (split unchanged),
    evaluated every `REFERENCE_EVAL_EVERY_STEPS`."""
    techniques = spec.techniques.model_copy(
        update={
            name: getattr(spec.techniques, name).model_copy(update={"enabled": False})
            for name in Techniques.model_fields
        }
    )
    budget = spec.budget.model_copy(update={"label_budget": 1.0})
    training = spec.training.model_copy(update={"eval_every_steps": REFERENCE_EVAL_EVERY_STEPS})
    return spec.model_copy(
        update={"techniques": techniques, "budget": budget, "training": training}
    )


def train_reference(spec: JobSpec, inputs: ResolvedInputs, scratch: Path) -> Reference:
    """(a): fine-tune the base on all training labels with the engine's teacher code."""
    started = time.monotonic()
    ref_spec = reference_spec(spec)
    seed_everything(ref_spec.seed)
    log_dir = scratch / "reference-log"
    log_dir.mkdir(parents=True)
    reporter = Reporter(LogCallbacks("reference"), log_dir)
    unlimited = Deadline(float("inf"))
    state, _ = prepare_state(ref_spec, inputs, reporter, unlimited)
    reporter.enter(Phase.TEACHER)
    fit = fine_tune(
        state,
        state.teacher,
        state.labelled_features(),
        state.train_labels(),
        epochs=ref_spec.training.teacher_epochs,
        deadline=unlimited,
        seed=ref_spec.seed,
    )
    validation = validation_metrics(state, state.teacher)
    wall = time.monotonic() - started
    setup = measurement_setup(state, state.tokenizer, state.teacher)
    measure_dir = scratch / "reference"
    measured = measure_teacher(state.teacher, state.tokenizer, setup, measure_dir)
    model_dir = scratch / "reference-model"
    save_hf_model(state.teacher, state.tokenizer, model_dir)
    print(
        f"[reference] {fit.steps} steps on {len(state.labelled)} labels in {wall:.0f}s: "
        f"val {validation['accuracy']:.4f}, test {measured.metrics['accuracy']:.4f}",
        file=sys.stderr,
    )
    return Reference(
        measured=measured,
        validation=validation,
        steps=fit.steps,
        best_step=fit.best_step,
        labels=len(state.labelled),
        wall_seconds=wall,
        model_dir=model_dir,
        onnx_path=measure_dir / "teacher.onnx",
        data=state.data,
    )


def head_to_head(ref: Reference, spec: JobSpec, artifact: Path, chosen: str) -> dict[str, Any]:
    """Interleaved timing of the reference fp32 model and the shipped int8 model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    batch, seq = spec.targets.latency_batch_size, spec.targets.latency_seq_len
    ref_tok = AutoTokenizer.from_pretrained(ref.model_dir)
    ref_model = AutoModelForSequenceClassification.from_pretrained(
        ref.model_dir, use_safetensors=True
    ).eval()
    student_tok = AutoTokenizer.from_pretrained(artifact / HF_DIR)
    ref_inputs = fixed_length_batch(ref_tok, ref.data.test, batch, seq)
    student_inputs = fixed_length_batch(student_tok, ref.data.test, batch, seq)
    torch_int8: torch.nn.Module | None = None
    if chosen == "torch-int8":
        student = AutoModelForSequenceClassification.from_pretrained(
            artifact / HF_DIR, use_safetensors=True
        )
        torch_int8 = quantize_torch_int8(student)
    onnx_path = ref.onnx_path
    if not onnx_path.is_file():  # measure_teacher exported it; re-export if it is gone
        onnx_path = export_onnx(ref_model, ref_inputs, list(ref_inputs), onnx_path)
    runs: dict[str, list[float]] = {"torch-fp32": [], "onnxruntime-fp32": [], chosen: []}
    for _ in range(H2H_ROUNDS):
        lat: list[Latency] = [
            time_torch(ref_model, ref_inputs, threads=THREADS, runtime="torch-fp32"),
            time_onnx(onnx_path, ref_inputs, threads=THREADS, runtime="onnxruntime-fp32"),
        ]
        if torch_int8 is not None:
            lat.append(time_torch(torch_int8, student_inputs, threads=THREADS, runtime=chosen))
        else:
            lat.append(
                time_onnx(artifact / ONNX_INT8, student_inputs, threads=THREADS, runtime=chosen)
            )
        for item in lat:
            runs[item.runtime].append(item.ms_per_batch)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    ref_runtime = min(("torch-fp32", "onnxruntime-fp32"), key=lambda k: medians[k])
    return {
        "batch_size": batch,
        "seq_len": seq,
        "threads": THREADS,
        "rounds": H2H_ROUNDS,
        "ms_per_batch_median": {k: round(v, 3) for k, v in medians.items()},
        "ms_per_batch_runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "reference_runtime": ref_runtime,
        "compressed_runtime": chosen,
        "speed_ratio": round(medians[ref_runtime] / medians[chosen], 3),
    }


def quick_inputs(spec: JobSpec, inputs: ResolvedInputs) -> tuple[JobSpec, ResolvedInputs]:
    path = ROOT / "var" / "data" / f"rt_quick_{QUICK_ROWS}.csv"
    if not path.is_file():
        write_csv(path, max_rows=QUICK_ROWS)
    training = spec.training.model_copy(update={"eval_every_steps": 15})
    budget = spec.budget.model_copy(update={"max_minutes": QUICK_MINUTES})
    quick = spec.model_copy(update={"training": training, "budget": budget})
    return quick, ResolvedInputs(model=inputs.model, train_path=path)


def summarise(
    spec: JobSpec,
    ref: Reference,
    manifest: dict[str, Any],
    h2h: dict[str, Any],
    *,
    quick: bool,
    command: str,
    load: dict[str, Any],
    bench_seconds: float,
    teacher_restored: bool = False,
) -> dict[str, Any]:
    t = ref.measured
    c = manifest["compressed"]
    size_ratio = t.size_mb / c["size_mb"]
    drop = 100 * (t.metrics["accuracy"] - c["accuracy"])
    labels_share = manifest["labels_used"] / manifest["labels_available"]
    wall = manifest["wall_seconds"]
    checks = {
        "size_ratio": {"value": round(size_ratio, 3), "target": ">= 8", "met": size_ratio >= 8},
        "speed_ratio": {
            "value": h2h["speed_ratio"],
            "target": ">= 3 (batch 32, seq 128)",
            "met": h2h["speed_ratio"] >= TARGETS["speed_ratio"],
        },
        "accuracy_drop_points": {
            "value": round(drop, 3),
            "target": "<= 1.0",
            "met": drop <= TARGETS["accuracy_drop_points"] + 1e-9,
        },
        "labels_share": {
            "value": round(labels_share, 4),
            "target": "<= 0.70",
            "met": labels_share <= LABEL_SHARE_MAX + 1e-9,
        },
        "sec_wall_minutes": {
            "value": round(wall / 60, 2),
            "target": "about 30 or less"
            + (
                " (teacher phase restored from a checkpoint: not the whole job)"
                if teacher_restored
                else ""
            ),
            "met": wall <= WALL_MINUTES * 60 * WALL_TOLERANCE and not teacher_restored,
        },
    }
    return {
        "target": "the engine target (docs/DESIGN_NOTES.md#targets)",
        "quick": quick,
        "command": command,
        "spec": manifest["spec"],
        "seed": spec.seed,
        "split": split_digest(ref.data),
        "machine": machine_info(),
        "load_average_1m_during_run": load,
        "reference_teacher": {
            "how": "stages.teacher.fine_tune on all training labels (same recipe as the job's teacher)",
            "labels": ref.labels,
            "steps": ref.steps,
            "best_step": ref.best_step,
            "train_wall_seconds": round(ref.wall_seconds, 1),
            "validation": {k: round(v, 6) for k, v in ref.validation.items()},
            "test": ref.measured.to_dict(),
        },
        "sec": {
            "test": c,
            "sec_teacher_test": manifest["teacher"],
            "labels_used": manifest["labels_used"],
            "labels_available": manifest["labels_available"],
            "wall_seconds": wall,
            "teacher_restored": teacher_restored,
            "techniques": manifest["techniques"],
            "ratios_vs_own_teacher": manifest["ratios"],
            "targets_met_in_manifest": manifest["targets_met"],
        },
        "head_to_head_latency": h2h,
        "checks": checks,
        "all_met": all(v["met"] for v in checks.values()),
        "bench_wall_seconds": round(bench_seconds, 1),
    }


def _row(name: str, ref: Any, sec: Any) -> str:
    return f"| {name} | {ref} | {sec} |"


def markdown(r: dict[str, Any], suffix: str = "") -> str:
    ref, sec = r["reference_teacher"]["test"], r["sec"]["test"]
    h2h = r["head_to_head_latency"]
    med = h2h["ms_per_batch_median"]
    aip = r["sec"]["techniques"].get("aip", {})
    sqd = r["sec"]["techniques"].get("sqd", {})
    lines = [
        "# SEC engine target run" + (" — QUICK (wiring only)" if r["quick"] else ""),
        "",
        f"Command: `{r['command']}`  ",
        f"Seed: {r['seed']}; split (rows): "
        + ", ".join(f"{k} {v['rows']}" for k, v in r["split"].items())
        + "  ",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cpu_count']} CPUs, "
        f"{r['machine']['torch_threads']} threads, torch {r['machine']['torch']}; "
        f"1-min load average during the run: mean {r['load_average_1m_during_run']['mean']}, "
        f"max {r['load_average_1m_during_run']['max']} (the machine is shared)",
        "",
        "| test split | (a) reference fp32 teacher, all labels | (b) SEC, label_budget 0.7 |",
        "| --- | --- | --- |",
        _row("accuracy", f"{ref['accuracy']:.4f}", f"{sec['accuracy']:.4f}"),
        _row("macro-F1", f"{ref['macro_f1']:.4f}", f"{sec['macro_f1']:.4f}"),
        _row("perplexity", f"{ref['perplexity']:.4f}", f"{sec['perplexity']:.4f}"),
        _row(
            "size on disk (MB)",
            f"{ref['size_mb']:.2f} (fp32 safetensors)",
            f"{sec['size_mb']:.2f} ({sec['size_file']})",
        ),
        _row(
            "latency ms/batch (b32, s128, 2 threads), job's own",
            f"{ref['latency_ms_per_batch']:.1f} ({ref['latency']['runtime']})",
            f"{sec['latency_ms_per_batch']:.1f} ({sec['latency']['runtime']})",
        ),
        _row(
            f"latency ms/batch, head-to-head median of {h2h['rounds']}",
            f"{med[h2h['reference_runtime']]:.1f} ({h2h['reference_runtime']})",
            f"{med[h2h['compressed_runtime']]:.1f} ({h2h['compressed_runtime']})",
        ),
        _row(
            "labels used",
            f"{r['reference_teacher']['labels']}",
            f"{r['sec']['labels_used']} of {r['sec']['labels_available']}",
        ),
        _row(
            "wall time",
            f"{r['reference_teacher']['train_wall_seconds'] / 60:.1f} min (training)",
            f"{r['sec']['wall_seconds'] / 60:.1f} min (whole job)",
        ),
        "",
        "| check | value | target | met |",
        "| --- | --- | --- | --- |",
        *[
            f"| {k} | {v['value']} | {v['target']} | {'yes' if v['met'] else 'NO'} |"
            for k, v in r["checks"].items()
        ],
        "",
        f"Student: {sqd.get('student_layers')} of {sqd.get('teacher_layers')} layers, "
        f"heads per layer {aip.get('heads_per_layer')}, FFN width {aip.get('ffn_width_per_layer')}, "
        f"vocabulary {sqd.get('vocabulary')}.",
        "",
        f"Full numbers: `engine_target{suffix}.json`; the SEC artifact's manifest: "
        f"`engine_target{suffix}.manifest.json`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--quick", action="store_true", help="small data, short budget")
    parser.add_argument("--out", type=Path, default=None, help="SEC artifact directory")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="the SEC job's teacher-phase checkpoint: saved there, and restored on a rerun of "
        "a spec that differs only on the compression side (the job's wall time then leaves "
        "the teacher phase out; the result says so)",
    )
    args = parser.parse_args(argv)
    command = "python -m bench.engine_target" + (" --quick" if args.quick else "")
    if spec_variant(args.spec):
        command += f" --spec {args.spec}"
    if args.checkpoint_dir is not None:
        command += f" --checkpoint-dir {args.checkpoint_dir}"
    torch.set_num_threads(THREADS)
    np.set_printoptions(precision=4)
    bench_start = time.monotonic()
    spec, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    if args.quick:
        spec, inputs = quick_inputs(spec, inputs)
    out_dir = args.out or (RUN_DIR.with_name(RUN_DIR.name + "_quick") if args.quick else RUN_DIR)
    with LoadSampler() as load, tempfile.TemporaryDirectory(prefix="sec-bench-") as tmp:
        ref = train_reference(spec, inputs, Path(tmp))
        log = LogCallbacks("sec")
        result = run_job(spec, inputs, out_dir, log, checkpoint_dir=args.checkpoint_dir)
        manifest = result.manifest
        chosen = manifest["compressed"]["runtime_choice"]["chosen"]
        h2h = head_to_head(ref, spec, out_dir, chosen)
    summary = summarise(
        spec,
        ref,
        manifest,
        h2h,
        quick=args.quick,
        command=command,
        load=load.summary(),
        bench_seconds=time.monotonic() - bench_start,
        teacher_restored=log.teacher_resumed,
    )
    variant = spec_variant(args.spec)
    suffix = (f".{variant}" if variant else "") + (".quick" if args.quick else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"engine_target{suffix}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"engine_target{suffix}.md").write_text(markdown(summary, suffix))
    shutil.copyfile(out_dir / "manifest.json", RESULTS / f"engine_target{suffix}.manifest.json")
    print(json.dumps(summary["checks"], indent=2))
    return 0 if summary["all_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
