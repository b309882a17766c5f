"""What the budget buys, and that load does not change it (docs/DESIGN_NOTES.md#targets).

    python -m bench.budget curve [--budgets 15,30,60,120] [--spec SPEC]
    python -m bench.budget load [--spec SPEC]

curve  The spec with generous epochs (teacher 3, student 12) and each budget: the plan
       (sec_engine.planning) shrinks that work to fit, so a larger budget trains longer. Each
       job's test accuracy is compared with the all-label reference teacher of
       `bench.engine_target` (same seed, split and recipe, trained once and cached under
       var/bench/reference/). Writes bench/results/budget_curve.{json,md,png}.
load   The spec as written, run twice: on a quiet machine, then with two processes keeping
       both cores busy for the whole job. The plan must be the same (it is sized from CPU
       time, not the wall clock) and the accuracy within 0.3 points. Writes
       bench/results/load_independence.{json,md}.

Both take long (the curve about 4 hours on 2 cores, the load check about 1.5): run alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import tempfile
import time
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
)
from sec_engine.checkpoint import teacher_spec_view
from sec_engine.cli import load_spec
from sec_engine.data.rotten_tomatoes import ensure as ensure_dataset
from sec_engine.pipeline import run_job
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

WORK = ROOT / "var" / "bench" / "budget"
GENEROUS = {"teacher_epochs": 3.0, "student_epochs": 12.0}
LOAD_TOLERANCE_POINTS = 0.3


def reference_accuracy(spec: JobSpec, inputs: ResolvedInputs) -> dict[str, float]:
    """Test metrics of the all-label reference teacher, trained once per teacher recipe."""
    from bench.engine_target import reference_spec, train_reference

    key = hashlib.sha256(
        json.dumps(teacher_spec_view(reference_spec(spec)), sort_keys=True).encode()
    ).hexdigest()[:16]
    path = ROOT / "var" / "bench" / "reference" / f"{key}.json"
    if path.is_file():
        cached: dict[str, float] = json.loads(path.read_text())
        return cached
    with tempfile.TemporaryDirectory(prefix="sec-ref-") as tmp:
        ref = train_reference(spec, inputs, Path(tmp))
    metrics = {k: float(v) for k, v in ref.measured.metrics.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


def run_once(spec: JobSpec, inputs: ResolvedInputs, out: Path, tag: str) -> dict[str, Any]:
    started = time.monotonic()
    manifest = run_job(spec, inputs, out, LogCallbacks(tag)).manifest
    plan = manifest["plan"]
    return {
        "budget_minutes": spec.budget.max_minutes,
        "plan": {
            k: plan[k]
            for k in ("teacher_epochs", "student_epochs", "teacher_steps", "student_steps")
        },
        "predicted_minutes": plan["predicted_minutes"],
        "actual_seconds": plan["actual_seconds"],
        "fits": plan["fits"],
        "accuracy": manifest["compressed"]["accuracy"],
        "job_teacher_accuracy": manifest["teacher"]["accuracy"],
        "size_ratio": manifest["ratios"]["size"],
        "speed_ratio": manifest["ratios"]["speed"],
        "warnings": manifest["warnings"],
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
    }


def _burn() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def curve(spec: JobSpec, inputs: ResolvedInputs, budgets: list[float]) -> dict[str, Any]:
    reference = reference_accuracy(spec, inputs)
    points = []
    for minutes in budgets:
        training = spec.training.model_copy(update=GENEROUS)
        budget = spec.budget.model_copy(update={"max_minutes": minutes})
        run_spec = spec.model_copy(update={"training": training, "budget": budget})
        point = run_once(run_spec, inputs, WORK / f"curve-{minutes:g}", f"{minutes:g}min")
        point["drop_points"] = round(100 * (reference["accuracy"] - point["accuracy"]), 3)
        points.append(point)
        print(f"[budget] {minutes:g} min: drop {point['drop_points']:+.2f}", file=sys.stderr)
    reached = next((p["budget_minutes"] for p in points if p["drop_points"] <= 0.5), None)
    return {"reference": reference, "points": points, "budget_for_half_point": reached}


def load_check(spec: JobSpec, inputs: ResolvedInputs, with_reference: bool) -> dict[str, Any]:
    """`with_reference`: also train (or read the cached) all-label reference, for the drops;
    the check itself compares the two runs with each other."""
    reference = reference_accuracy(spec, inputs) if with_reference else None
    with LoadSampler() as quiet_load:
        quiet = run_once(spec, inputs, WORK / "load-quiet", "quiet")
    quiet["load_average_1m"] = quiet_load.summary()
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(2)]
    for b in burners:
        b.start()
    try:
        with LoadSampler() as load:
            busy = run_once(spec, inputs, WORK / "load-busy", "busy")
        busy["load_average_1m"] = load.summary()
    finally:
        for b in burners:
            b.terminate()
    diff = round(100 * abs(quiet["accuracy"] - busy["accuracy"]), 3)
    return {
        "reference": reference,
        "quiet": quiet,
        "busy": busy,
        "same_plan": quiet["plan"] == busy["plan"],
        "accuracy_difference_points": diff,
        "within_tolerance": diff <= LOAD_TOLERANCE_POINTS,
    }


def curve_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Budget curve: what more budget buys",
        "",
        f"Command: `{r['command']}`; machine {r['machine']['cpu']}, {THREADS} threads; "
        f"reference teacher (all labels) test accuracy {r['reference']['accuracy']:.4f}.",
        "",
        "| budget (min) | plan: teacher / student epochs | predicted min | wall min | test acc | "
        "drop (pts) | size × | speed × |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in r["points"]:
        lines.append(
            f"| {p['budget_minutes']:g} | {p['plan']['teacher_epochs']:.2f} / "
            f"{p['plan']['student_epochs']:.2f} | {p['predicted_minutes']:.1f} | "
            f"{p['wall_minutes']:.1f} | {p['accuracy']:.4f} | {p['drop_points']:+.2f} | "
            f"{p['size_ratio']:.2f} | {p['speed_ratio']:.2f} |"
        )
    half = r["budget_for_half_point"]
    lines += [
        "",
        f"Drop ≤ 0.5 points first reached at: {f'{half:g} min' if half else 'no budget tried'}.",
        "",
        "![drop vs budget](budget_curve.png)",
        "",
    ]
    return "\n".join(lines)


def _drop(reference: float | None, accuracy: float) -> str:
    return "-" if reference is None else f"{100 * (reference - accuracy):.2f}"


def load_markdown(r: dict[str, Any]) -> str:
    q, b = r["quiet"], r["busy"]
    ref = r["reference"]["accuracy"] if r["reference"] else None
    return "\n".join(
        [
            "# Load independence: the same plan on a busy machine",
            "",
            f"Command: `{r['command']}`; machine {r['machine']['cpu']}, {THREADS} threads; busy "
            f"= two processes spinning on both cores. All-label reference teacher: "
            + (f"test accuracy {ref:.4f}." if ref is not None else "not trained."),
            "",
            "| run | 1-min load mean (max) | plan (teacher / student steps) | predicted min "
            "| wall min | test acc (teacher) | drop vs reference (pts) | size x | speed x |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {x['load_average_1m']['mean']} ({x['load_average_1m']['max']}) | "
                f"{x['plan']['teacher_steps']} / {x['plan']['student_steps']} | "
                f"{x['predicted_minutes']:.1f} | {x['wall_minutes']:.1f} | "
                f"{x['accuracy']:.4f} ({x['job_teacher_accuracy']:.4f}) | "
                f"{_drop(ref, x['accuracy'])} | "
                f"{x['size_ratio']:.2f} | {x['speed_ratio']:.2f} |"
                for name, x in (("quiet", q), ("busy", b))
            ),
            "",
            f"Same plan: {'yes' if r['same_plan'] else 'NO'}; accuracy difference "
            f"{r['accuracy_difference_points']:.2f} points (target ≤ {LOAD_TOLERANCE_POINTS}): "
            f"{'met' if r['within_tolerance'] else 'NOT met'}.",
            "",
        ]
    )


def plot_curve(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["budget_minutes"] for p in r["points"]]
    ax.plot(xs, [p["drop_points"] for p in r["points"]], marker="o")
    ax.axhline(1.0, color="grey", linestyle="--", label="promise: 1 point")
    ax.axhline(0.5, color="green", linestyle=":", label="aim: 0.5 point")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel("budget (minutes, 2 CPU cores)")
    ax.set_ylabel("accuracy drop vs all-label teacher (points)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("curve", "load"))
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--budgets", default="15,30,60,120")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="load: skip the all-label reference (its drops), which trains for minutes",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    spec, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    command = f"python -m bench.budget {args.what}"
    if args.what == "curve":
        command += f" --budgets {args.budgets}"
        result = curve(spec, inputs, [float(b) for b in args.budgets.split(",")])
    else:
        command += " --no-reference" if args.no_reference else ""
        result = load_check(spec, inputs, with_reference=not args.no_reference)
    result.update(command=command, machine=machine_info())
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "budget_curve" if args.what == "curve" else "load_independence"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = curve_markdown(result) if args.what == "curve" else load_markdown(result)
    (RESULTS / f"{name}.md").write_text(text)
    if args.what == "curve":
        plot_curve(result, RESULTS / "budget_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
