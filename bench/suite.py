"""The benchmark suite: the paper's Tables 1-4, the peers, label efficiency.

    python -m bench [--quick] [--sections compression,table1,labels] [--report-only]

Sections, in the order they run (each writes bench/results/<section>[.quick].json as soon
as it finishes, so a partial run is useful; RESULTS.md and the plots are rebuilt after each):

- compression  Tables 2-4 analogue and the peers: the fp32 baseline teacher; + pruning (AIP);
               + quantization (QAT int8); + KD (SQD student); SEC combined; SEC with fixed λ;
               PyTorch / ONNX Runtime dynamic int8 PTQ; a DistilBERT-style student; one-shot
               TextPruner-style structured pruning. Latency: every row's runtimes timed in
               interleaved rounds at batch 32, seq 128, 2 threads.
- table1       Table 1 analogue: training time and accuracy of the data modules.
- labels       label efficiency: teacher accuracy vs label fraction, random vs TAL (entropy).

Every row is a job spec run by the engine (`bench.variants`), on one seeded split of the same
CSV; the baseline teacher (all labels, fine-tuned from the pretrained base) is trained once and
is the base of the compression rows (teacher_epochs 0), as a user compressing their model
would do. SEC combined runs the user's spec as written (from the pretrained base, TAL spending
70% of the labels). Run folders live under var/bench/<mode>/ and are reused when their spec is
unchanged (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from bench.measure import (
    Candidate,
    apply_latency,
    fp32_candidates,
    onnx_int8_peer,
    release,
    test_metrics,
    time_interleaved,
    torch_int8_peer,
)
from bench.tables import SCHEMA_VERSION, Row
from bench.variants import from_teacher, variant
from bench.waterfall import section_waterfall
from sec_engine.artifact_contract import HF_DIR, ONNX_INT8
from sec_engine.cli import load_spec
from sec_engine.data.rotten_tomatoes import ensure as ensure_dataset
from sec_engine.data.rotten_tomatoes import write_csv
from sec_engine.data.splits import DataBundle, load_data
from sec_engine.pipeline import run_job, seed_everything
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

SECTIONS = ("compression", "table1", "labels", "waterfall")


@dataclass(frozen=True)
class Mode:
    name: str  # "full" | "quick"
    rows: int | None  # CSV rows (None = the whole dataset)
    minutes: float | None  # per-job budget override (None = the spec's)
    training: dict[str, Any]
    fractions: tuple[float, ...]
    rounds: int
    repeats: int


FULL = Mode("full", None, None, {}, (0.1, 0.25, 0.5, 0.7), rounds=3, repeats=5)
QUICK = Mode(
    "quick",
    900,
    2.0,
    {"teacher_epochs": 1.0, "student_epochs": 1.0, "eval_every_steps": 10, "max_seq_len": 48},
    (0.3,),
    rounds=2,
    repeats=3,
)


@dataclass
class Context:
    spec: JobSpec
    inputs: ResolvedInputs
    data: DataBundle
    mode: Mode
    work: Path  # var/bench/<mode>
    command: str
    results: Path = RESULTS
    variant: str = ""  # the spec file's stem when it is not the default spec

    @property
    def max_len(self) -> int:
        return self.spec.training.max_seq_len

    def results_path(self, section: str) -> Path:
        suffix = f".{self.variant}" if self.variant else ""
        suffix += "" if self.mode.name == "full" else f".{self.mode.name}"
        return self.results / f"{section}{suffix}.json"


@dataclass
class JobRun:
    out_dir: Path
    manifest: dict[str, Any]
    train_seconds: float


def run_variant(ctx: Context, key: str, spec: JobSpec, model: str | None = None) -> JobRun:
    """Run one row's job, or reuse its folder when the same spec already finished there."""
    out = ctx.work / "runs" / key
    spec_json = spec.model_dump(mode="json")
    marker = out / "bench_run.json"
    if marker.is_file() and (out / "manifest.json").is_file():
        saved = json.loads(marker.read_text())
        if saved.get("spec") == spec_json and saved.get("model") == model:
            print(f"[bench] reusing {out}", file=sys.stderr)
            manifest = json.loads((out / "manifest.json").read_text())
            return JobRun(out, manifest, saved["train_seconds"])
    shutil.rmtree(out, ignore_errors=True)
    inputs = (
        ctx.inputs
        if model is None
        else ResolvedInputs(model=model, train_path=ctx.inputs.train_path)
    )
    seed_everything(spec.seed)
    callbacks = LogCallbacks(key)
    result = run_job(spec, inputs, out, callbacks)
    train_seconds = callbacks.training_seconds()
    marker.write_text(
        json.dumps({"spec": spec_json, "model": model, "train_seconds": train_seconds}) + "\n"
    )
    return JobRun(out, result.manifest, train_seconds)


def _metrics_row(row: Row, metrics: dict[str, Any]) -> Row:
    row.accuracy = round(float(metrics["accuracy"]), 6)
    row.macro_f1 = round(float(metrics["macro_f1"]), 6)
    row.perplexity = round(float(metrics["perplexity"]), 6)
    return row


def _job_row(name: str, section: str, group: str, run: JobRun, how: str) -> Row:
    m = run.manifest
    return Row(
        name=name,
        section=section,
        group=group,
        train_seconds=run.train_seconds,
        labels_used=m["labels_used"],
        labels_available=m["labels_available"],
        how=how,
        extra={"run_dir": str(run.out_dir.relative_to(ROOT)), "wall_seconds": m["wall_seconds"]},
    )


def _teacher_spec(ctx: Context) -> JobSpec:
    return variant(ctx.spec)


def baseline_teacher(ctx: Context) -> JobRun:
    """All labels, every technique off: the pipeline fine-tunes the pretrained base (transfer)
    and ships it unchanged, so <run>/model is the fp32 baseline teacher."""
    return run_variant(ctx, "baseline", _teacher_spec(ctx))


# --- Tables 2-4 and the peers ------------------------------------------------------------


def section_compression(ctx: Context) -> dict[str, Any]:
    base = baseline_teacher(ctx)
    teacher_dir = base.out_dir / HF_DIR
    scratch = ctx.work / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    on_teacher = from_teacher(ctx.spec, str(teacher_dir))
    sqd = ctx.spec.techniques.sqd
    aip = ctx.spec.techniques.aip
    rows: list[Row] = []
    cands: dict[str, list[Candidate]] = {}

    def add(row: Row, options: list[Candidate], metrics: dict[str, Any] | None = None) -> None:
        _metrics_row(
            row, metrics if metrics is not None else test_metrics(options[0], ctx.data, ctx.max_len)
        )
        rows.append(row)
        cands[row.name] = options
        print(f"[bench] {row.name}: accuracy {row.accuracy:.4f}", file=sys.stderr)

    def fp32(run_dir: Path, tag: str) -> list[Candidate]:
        d = scratch / tag
        d.mkdir(parents=True, exist_ok=True)
        return fp32_candidates(run_dir / HF_DIR, ctx.data, d)

    def int8(run: JobRun) -> list[Candidate]:
        return [
            Candidate("onnxruntime-int8", run.out_dir / HF_DIR, onnx_path=run.out_dir / ONNX_INT8)
        ]

    add(
        _job_row(
            "baseline (fp32 teacher)", "compression", "baseline", base, "fine-tuned on all labels"
        ),
        fp32(base.out_dir, "baseline"),
    )

    jobs: list[
        tuple[str, str, str, JobSpec, str | None, Callable[[JobRun], list[Candidate]], str]
    ] = [
        (
            "+ pruning (AIP)",
            "aip",
            "sec-module",
            variant(on_teacher, on={"aip": {}}),
            str(teacher_dir),
            lambda r: fp32(r.out_dir, "aip"),
            f"structured heads/FFN to {aip.target_head_sparsity:.0%}/{aip.target_ffn_sparsity:.0%}, "
            "Taylor importance, adaptive schedule, fine-tuned; fp32",
        ),
        (
            "+ quantization (QAT int8)",
            "qat",
            "sec-module",
            variant(
                on_teacher,
                on={
                    "sqd": {
                        "student_layers": teacher_layers(teacher_dir),
                        "alpha": 0.0,
                        "hidden_weight": 0.0,
                        "qat": True,
                        "prune_vocabulary": False,
                        "runtime": "onnxruntime",
                    }
                },
                training={"student_epochs": 0.5},
            ),
            str(teacher_dir),
            int8,
            "all layers kept, int8 fake-quant fine-tuning, int8 ONNX Runtime",
        ),
        (
            "+ knowledge distillation (SQD student)",
            "kd",
            "sec-module",
            variant(on_teacher, on={"sqd": {"qat": False, "prune_vocabulary": False}}),
            str(teacher_dir),
            lambda r: fp32(r.out_dir, "kd"),
            f"{sqd.student_layers or 'half the'} layers from the teacher, logit + hidden-state KD; fp32",
        ),
        (
            "SEC combined",
            "sec",
            "sec",
            ctx.spec,
            None,
            int8,
            "the user's spec: TAL (label_budget "
            f"{ctx.spec.budget.label_budget}) + ADA + AIP + SQD, adaptive controller",
        ),
        (
            "SEC, fixed λ (controller ablation)",
            "sec_fixed",
            "sec",
            ctx.spec.model_copy(
                update={"controller": ctx.spec.controller.model_copy(update={"adaptive": False})}
            ),
            None,
            int8,
            "as SEC combined with controller.adaptive: false",
        ),
        (
            "DistilBERT-style student + KD",
            "distilbert",
            "peer",
            variant(
                on_teacher,
                on={"sqd": {"hidden_weight": 0.0, "qat": False, "prune_vocabulary": False}},
            ),
            str(teacher_dir),
            lambda r: fp32(r.out_dir, "distilbert"),
            "every other layer kept, logit KD + task loss, no pruning/quantization/data module; fp32",
        ),
    ]
    for name, key, group, spec, model, to_cands, how in jobs:
        run = run_variant(ctx, key, spec, model)
        add(_job_row(name, "compression", group, run, how), to_cands(run))
        if group == "sec":
            rows[-1].extra["lambda_trace"] = lambda_trace(run.out_dir / "trace.jsonl")
            rows[-1].extra["manifest_compressed"] = {
                k: run.manifest["compressed"].get(k)
                for k in (
                    "accuracy",
                    "size_mb",
                    "latency_ms_per_batch",
                    "runtime_choice",
                    "size_file",
                )
            }

    d = scratch / "ptq"
    d.mkdir(parents=True, exist_ok=True)
    peer = Row(
        "PyTorch dynamic int8 PTQ",
        "compression",
        "peer",
        how="torch.ao quantize_dynamic(nn.Linear, qint8) of the teacher; size = saved int8 state_dict",
    )
    add(peer, [torch_int8_peer(teacher_dir, d)])
    peer = Row(
        "ONNX Runtime dynamic int8 PTQ",
        "compression",
        "peer",
        how="onnxruntime.quantization.quantize_dynamic (QInt8 with the engine's export scheme: per-channel, reduced range, per-token activation scales; MatMul + Gather) of the teacher's ONNX export; optimum not installed (it would downgrade transformers)",
    )
    add(peer, [onnx_int8_peer(teacher_dir, ctx.data, d)])
    pruned_dir = one_shot_pruned(ctx, teacher_dir, scratch / "textpruner")
    peer = Row(
        "TextPruner-style one-shot pruning",
        "compression",
        "peer",
        how="one-shot head/FFN pruning to the same sparsity by Taylor importance on the labelled data, no fine-tuning, no data module (textpruner not installed: it pins numpy 1.21); fp32",
    )
    add(peer, fp32(pruned_dir.parent, "textpruner"))

    runs = time_interleaved(
        [(name, c) for name, options in cands.items() for c in options],
        ctx.data,
        rounds=ctx.mode.rounds,
        repeats=ctx.mode.repeats,
    )
    apply_latency(rows, cands, runs)
    release(cands)
    return {"rows": [r.to_dict() for r in rows]}


def teacher_layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def lambda_trace(path: Path) -> list[dict[str, Any]]:
    """The controller's λ1/λ2 per evaluation of the compression phase (for the plot)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("phase") == "compressing":
            out.append(
                {
                    "step": row["observation"].get("phase_step", row["step"]),
                    "lambda1": row["lambda1"],
                    "lambda2": row["lambda2"],
                    "val_accuracy": row.get("val_accuracy"),
                    "rule": row.get("decision", {}).get("rule"),
                }
            )
    return out


def one_shot_pruned(ctx: Context, teacher_dir: Path, out: Path) -> Path:
    """Structured pruning without training or data optimization: Taylor scores on a few
    labelled batches, one cut to the spec's target sparsity, saved as an HF folder."""
    from transformers import AutoModelForSequenceClassification

    from bench.measure import tokenizer_of
    from sec_engine.compression.aip_ops import (
        prune_structured,
        select_structures,
        taylor_importance,
    )
    from sec_engine.data.encoding import encode, iter_batches, pad_id
    from sec_engine.export.hf_export import save_hf_model
    from sec_engine.training import forward

    model_dir = out / HF_DIR
    if (model_dir / "config.json").is_file():
        return model_dir
    tok = tokenizer_of(teacher_dir)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, use_safetensors=True)
    feats = encode(tok, ctx.data.train[:1024], ctx.max_len)
    labels = torch.tensor([e.label for e in ctx.data.train[:1024]])

    def loss_fn(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        logits, _ = forward(m, batch.inputs, torch.device("cpu"))
        return torch.nn.functional.cross_entropy(logits, labels[batch.index])

    batches = iter_batches(feats, 32, pad_id(tok), by_length=False)
    scores = taylor_importance(model, batches, loss_fn, max_batches=32)
    aip = ctx.spec.techniques.aip
    masks = select_structures(
        scores, head_sparsity=aip.target_head_sparsity, neuron_sparsity=aip.target_ffn_sparsity
    )
    prune_structured(model, masks)
    save_hf_model(model, tok, model_dir)
    return model_dir


# --- Table 1 ------------------------------------------------------------------------------


def random_init_base(ctx: Context) -> Path:
    """The base model's architecture with fresh random weights (the no-transfer control)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bench.measure import tokenizer_of
    from sec_engine.models.registry import resolve_source

    out = ctx.work / "random-init"
    if (out / "config.json").is_file():
        return out
    source = resolve_source(ctx.inputs.model)
    config = AutoConfig.from_pretrained(source, num_labels=len(ctx.data.labels))
    torch.manual_seed(ctx.spec.seed)
    model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(out)
    tokenizer_of(Path(source)).save_pretrained(out)
    return out


def section_table1(ctx: Context) -> dict[str, Any]:
    tal = ctx.spec.techniques.tal
    budget = ctx.spec.budget.label_budget
    student = ctx.spec.training.teacher_epochs
    tiny = {"student_epochs": 0.01}  # no compression: the student copy barely moves
    rows: list[Row] = []
    jobs: list[tuple[str, str, JobSpec, str | None, str, bool]] = [
        (
            "baseline fine-tune (from pretrained)",
            "baseline",
            _teacher_spec(ctx),
            None,
            "pretrained base, all labels, teacher recipe",
            False,
        ),
        (
            "no transfer (random init)",
            "scratch",
            _teacher_spec(ctx),
            str(random_init_base(ctx)),
            "same recipe from random weights: what transfer buys",
            False,
        ),
        (
            "+ data augmentation (ADA)",
            "ada",
            variant(ctx.spec, on={"ada": {}}, training={"student_epochs": student}),
            None,
            f"baseline, then {student} more epochs on labels + adaptive augmentations (teacher soft labels)",
            True,
        ),
        (
            "+ active learning (TAL rounds)",
            "al",
            variant(
                ctx.spec,
                on={"tal": {"consistency_weight": 0.0}},
                label_budget=budget,
                training=tiny,
            ),
            None,
            f"{tal.rounds} rounds of {tal.strategy} sampling, {budget:.0%} of the labels",
            False,
        ),
        (
            "+ semi-supervised (TAL + pseudo-labels)",
            "ssl",
            variant(ctx.spec, on={"tal": {}}, label_budget=budget, training=tiny),
            None,
            f"as above + pseudo-labels ≥ {tal.pseudo_label_threshold} weighted {tal.consistency_weight}",
            False,
        ),
        (
            "all data modules (ADA + TAL + pseudo-labels)",
            "data_all",
            variant(
                ctx.spec,
                on={"tal": {}, "ada": {}},
                label_budget=budget,
                training={"student_epochs": student},
            ),
            None,
            "TAL teacher, then ADA + distillation set on the copy",
            True,
        ),
    ]
    for name, key, spec, model, how, product in jobs:
        run = run_variant(ctx, key, spec, model)
        row = _job_row(name, "table1", "data-module", run, how)
        if product:  # the data module trained the shipped copy: evaluate that fp32 model
            metrics = test_metrics(
                Candidate("torch-fp32", run.out_dir / HF_DIR, model_dir=run.out_dir / HF_DIR),
                ctx.data,
                ctx.max_len,
            )
            row.extra["evaluated"] = "the job's fp32 model (model/)"
        else:  # the teacher is the product of these rows; the engine measured it on test
            metrics = run.manifest["teacher"]
            row.extra["evaluated"] = "the job's fp32 teacher (manifest.teacher)"
        rows.append(_metrics_row(row, metrics))
        print(f"[bench] {name}: accuracy {row.accuracy:.4f}, {row.train_seconds}s", file=sys.stderr)
    return {"rows": [r.to_dict() for r in rows]}


# --- label efficiency ---------------------------------------------------------------------


def section_labels(ctx: Context) -> dict[str, Any]:
    base = baseline_teacher(ctx)
    rows = [
        _metrics_row(
            _job_row("all labels", "labels", "label-efficiency", base, "baseline teacher"),
            base.manifest["teacher"],
        )
    ]
    rows[0].extra.update({"fraction": 1.0, "strategy": "all"})
    for fraction in ctx.mode.fractions:
        for strategy in ("random", "entropy"):
            spec = variant(
                ctx.spec,
                on={"tal": {"strategy": strategy, "consistency_weight": 0.0}},
                label_budget=fraction,
                training={"student_epochs": 0.01},
            )
            run = run_variant(ctx, f"labels_{strategy}_{fraction}", spec)
            row = _job_row(
                f"{strategy} {fraction:.0%}",
                "labels",
                "label-efficiency",
                run,
                f"TAL teacher, {strategy} acquisition, no pseudo-labels",
            )
            row.extra.update({"fraction": fraction, "strategy": strategy})
            rows.append(_metrics_row(row, run.manifest["teacher"]))
            print(f"[bench] labels {strategy} {fraction}: {row.accuracy:.4f}", file=sys.stderr)
    return {"rows": [r.to_dict() for r in rows]}


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "compression": section_compression,
    "table1": section_table1,
    "labels": section_labels,
    "waterfall": section_waterfall,
}


# --- orchestration ------------------------------------------------------------------------


def make_context(
    spec_path: Path, mode: Mode, command: str, work: Path | None = None, results: Path = RESULTS
) -> Context:
    spec, inputs = load_spec(spec_path)
    ensure_dataset(inputs.train_path)
    work = (work or ROOT / "var" / "bench" / mode.name).resolve()
    if mode.rows is not None:
        path = work / "data" / f"rt_{mode.rows}.csv"
        if not path.is_file():
            write_csv(path, max_rows=mode.rows)
        inputs = ResolvedInputs(model=inputs.model, train_path=path)
    if mode.training:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update=mode.training)})
    if mode.minutes is not None:
        spec = spec.model_copy(
            update={"budget": spec.budget.model_copy(update={"max_minutes": mode.minutes})}
        )
    spec = JobSpec.model_validate(spec.model_dump())
    data = load_data(inputs, spec.split, spec.seed)
    return Context(spec, inputs, data, mode, work, command, results, spec_variant(spec_path))


def run_section(ctx: Context, section: str) -> dict[str, Any]:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    with LoadSampler() as load:
        body = RUNNERS[section](ctx)
    result = {
        "schema_version": SCHEMA_VERSION,
        "section": section,
        "mode": ctx.mode.name,
        "command": ctx.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - t0, 1),
        "seed": ctx.spec.seed,
        "spec": ctx.spec.model_dump(mode="json"),
        "split": split_digest(ctx.data),
        "machine": machine_info(),
        "load_average_1m_during_section": load.summary(),
        "latency_setup": {
            "batch_size": 32,
            "seq_len": 128,
            "threads": THREADS,
            "rounds": ctx.mode.rounds,
            "repeats_per_round": ctx.mode.repeats,
        },
        **body,
    }
    ctx.results.mkdir(parents=True, exist_ok=True)
    ctx.results_path(section).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small data, short budgets (a smoke run: aims at 15 min, took 74 on a loaded 2-core box)",
    )
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md and plots")
    parser.add_argument("--work", type=Path, default=None, help="run folders (var/bench/<mode>)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="result files, plots")
    args = parser.parse_args(argv)
    from bench.report import write_report

    report = args.results.parent / "RESULTS.md"
    if args.report_only:
        write_report(args.results, report)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    mode = QUICK if args.quick else FULL
    command = "python -m bench" + (" --quick" if args.quick else "")
    if sections != list(SECTIONS):
        command += f" --sections {','.join(sections)}"
    if spec_variant(args.spec):
        command += f" --spec {args.spec}"
    if args.work is not None:
        command += f" --work {args.work}"
    torch.set_num_threads(THREADS)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx = make_context(args.spec, mode, command, args.work, args.results)
    for section in sections:
        print(f"[bench] section {section} ({mode.name})", file=sys.stderr)
        run_section(ctx, section)
        write_report(args.results, report)
    return 0
