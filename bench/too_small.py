"""A base-size model on a budget too small for it: what the dry run says before any is spent.

    python -m bench.too_small [--budget 30] [--spec bench/specs/minilm_rt_pairs.yaml]

The field report this answers: a 110M-parameter model uploaded with the sentence-pair spec
and a 30-minute budget trained its student for 0 steps and ended `succeeded` at chance. Here
the same shape (BERT-base: 12 layers, hidden 768, 110M parameters, MiniLM's tokenizer) gets
a dry run of that spec: the calibration times its real steps on this device, and the plan
and the first events must say the budget is too small and what it needs. The weights are
random: a step's cost depends on the shape alone, and no base-size checkpoint is available
offline, so whether that teacher then learns is not what this bench can show.

Then the plan at the budgets the first dry run named (the minimum useful plan, the spec's
full epochs), from the same calibration, to show they fit. Writes
bench/results/too_small.{json,md}; a few minutes on 2 cores (the calibration's base-size
steps).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS, ROOT, THREADS, LoadSampler, LogCallbacks, machine_info
from sec_engine.cli import load_spec
from sec_engine.data.rotten_tomatoes import ensure as ensure_dataset
from sec_engine.models.registry import resolve_source
from sec_engine.pipeline import dry_run_job
from sec_engine.planning import Throughput
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

DEFAULT_SPEC = ROOT / "bench" / "specs" / "minilm_rt_pairs.yaml"
MODEL_DIR = ROOT / "var" / "bench" / "bert-base-shape"


class RecordingCallbacks(LogCallbacks):
    """LogCallbacks that also keep each event, for the result file."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.events: list[dict[str, Any]] = []

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().event(kind, message, data)
        self.events.append({"kind": kind, "message": message})


def base_size_model(tokenizer_source: str, out: Path) -> Path:
    """A BERT-base-shaped classifier with random weights and `tokenizer_source`'s tokenizer,
    saved as safetensors (written once)."""
    if (out / "config.json").is_file():
        return out
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = BertConfig(vocab_size=tokenizer.vocab_size)  # defaults: base size
    config.num_labels = 2
    model = BertForSequenceClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def dry_run_at(
    spec: JobSpec, inputs: ResolvedInputs, minutes: float, throughput: Throughput | None
) -> dict[str, Any]:
    budget = spec.budget.model_copy(update={"max_minutes": minutes})
    callbacks = RecordingCallbacks(f"{minutes:g}min")
    result = dry_run_job(spec.model_copy(update={"budget": budget}), inputs, callbacks, throughput)
    plan = result["plan"]
    keep = ("fits", "teacher_steps", "student_steps", "predicted_minutes", "minimum_minutes")
    return {
        "budget_minutes": minutes,
        **{k: plan[k] for k in (*keep, "full_minutes", "scale")},
        "warnings": result["warnings"],
        "events": [e for e in callbacks.events if e["kind"] in ("plan", "budget.too_small")],
        "throughput": plan["throughput"],
    }


def check(spec: JobSpec, inputs: ResolvedInputs, budget: float) -> dict[str, Any]:
    model = base_size_model(resolve_source(spec.base_model), MODEL_DIR)
    inputs = ResolvedInputs(
        model=str(model),
        train_path=inputs.train_path,
        validation_path=inputs.validation_path,
        unlabelled_path=inputs.unlabelled_path,
    )
    with LoadSampler() as load:
        first = dry_run_at(spec, inputs, budget, None)
    throughput = Throughput(**first["throughput"])
    needed = sorted({math.ceil(first["minimum_minutes"]), math.ceil(first["full_minutes"])})
    later = [dry_run_at(spec, inputs, float(m), throughput) for m in needed if m > budget]
    return {
        "model": "BERT-base shape (12 layers, hidden 768, random weights)",
        "parameters": _parameters(model),
        "runs": [first, *later],
        "load_average_1m": load.summary(),
    }


def _parameters(model_dir: Path) -> int:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def markdown(r: dict[str, Any]) -> str:
    tp = r["runs"][0]["throughput"]
    lines = [
        "# A base-size model on a budget too small for it: the dry run",
        "",
        f"Command: `{r['command']}`; machine {r['machine']['cpu']}, {THREADS} threads; "
        f"1-min load mean {r['load_average_1m']['mean']} (max {r['load_average_1m']['max']}) "
        "during the calibration.",
        "",
        f"Model: {r['model']}, {r['parameters'] / 1e6:.1f}M parameters; spec `{r['spec']}` "
        "with only the budget changed. Calibration (CPU seconds per step): teacher "
        f"{tp['teacher_step_s']:.2f}, student {tp['student_step_s']:.2f}; it took "
        f"{tp['calibration_s']:.0f} s. The later rows reuse that calibration.",
        "",
        "| budget (min) | fits | teacher / student steps | predicted min | needs (min): "
        "useful / spec's epochs | first warning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in r["runs"]:
        warning = run["warnings"][0] if run["warnings"] else "-"
        lines.append(
            f"| {run['budget_minutes']:g} | {'yes' if run['fits'] else '**no**'} | "
            f"{run['teacher_steps']} / {run['student_steps']} | {run['predicted_minutes']:.1f} | "
            f"{run['minimum_minutes']:.1f} / {run['full_minutes']:.1f} | {warning} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    spec, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    result = check(spec, inputs, args.budget)
    spec_path = args.spec.resolve()
    spec_name = spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else args.spec
    result.update(
        command=f"python -m bench.too_small --budget {args.budget:g} --spec {spec_name}",
        spec=str(spec_name),
        machine=machine_info(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "too_small.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "too_small.md").write_text(markdown(result))
    print(markdown(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
