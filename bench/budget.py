"""What the budget buys, and that load does not change it (docs/DESIGN_NOTES.md#targets).

    python -m bench.budget curve [--budgets 15,30,60,120] [--spec SPEC]
    python -m bench.budget load [--spec SPEC]

curve  The spec with generous epochs (teacher 3, student 12) and each budget: the plan
       (sec_engine.planning) shrinks that work to fit, so a larger budget trains longer. Each
       job's test accuracy is compared with the all-label reference teacher of
       `bench.engine_target` (same seed, split and recipe, trained once and cached under
       var/bench/reference/). Writes bench/results/budget_curve.{json,md,png} after every
       point, keeping the points already there for the same spec, so the four budgets can
       be run in separate sittings (`--budgets 120` adds that point to the committed curve).
       Each CPU gets its own curve: the plan sizes the work to the device.
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
from collections.abc import Callable
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
CURVE_BUDGETS = (15.0, 30.0, 60.0, 120.0)  # minutes: the curve the README promises
LOAD_TOLERANCE_POINTS = 0.3
UNKNOWN_CPU = "unknown CPU"


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
        "runtime": manifest["compressed"]["latency"]["runtime"],
        "warnings": manifest["warnings"],
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
    }


def _burn() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def curve_key(spec: JobSpec) -> str:
    """Which curve a point belongs to: the spec with the curve's epochs, budget left out."""
    view = spec.model_copy(
        update={"training": spec.training.model_copy(update=GENEROUS)}
    ).model_dump(mode="json")
    view["budget"].pop("max_minutes", None)
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]


def merge_points(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per CPU and budget, the newest run winning, sorted by CPU, then budget."""
    by_key = {_point_key(p): p for p in previous}
    by_key.update({_point_key(p): p for p in new})
    return [by_key[k] for k in sorted(by_key)]


def _point_key(point: dict[str, Any]) -> tuple[str, float]:
    return (point.get("machine", UNKNOWN_CPU), point["budget_minutes"])


def cpu_of(machine: dict[str, Any]) -> str:
    """The CPU a point ran on: the plan sizes the work to the device, so points from
    different CPUs train different steps for the same budget."""
    return f"{machine['cpu']} ({machine.get('cpu_int8', 'unknown')})"


def curves_by_cpu(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each CPU's own curve, budgets ascending: the same budget buys a faster CPU more steps,
    so points from two CPUs are not one curve."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for point in sorted(points, key=_point_key):
        curves.setdefault(point.get("machine", UNKNOWN_CPU), []).append(point)
    return curves


def half_point_budget(points: list[dict[str, Any]]) -> float | None:
    """The smallest budget of one CPU's curve whose drop is at most half a point."""
    return next((p["budget_minutes"] for p in points if p["drop_points"] <= 0.5), None)


def half_point_budgets(points: list[dict[str, Any]]) -> dict[str, float | None]:
    return {cpu: half_point_budget(curve) for cpu, curve in curves_by_cpu(points).items()}


def curve(
    spec: JobSpec,
    inputs: ResolvedInputs,
    budgets: list[float],
    previous: list[dict[str, Any]],
    save: Callable[[dict[str, Any]], None],
    command: str,
) -> dict[str, Any]:
    """Runs each budget and saves after every point, so a long curve can be built over
    several sittings (`previous`: the points already measured for this same spec)."""
    reference = reference_accuracy(spec, inputs)
    points: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for minutes in budgets:
        training = spec.training.model_copy(update=GENEROUS)
        budget = spec.budget.model_copy(update={"max_minutes": minutes})
        run_spec = spec.model_copy(update={"training": training, "budget": budget})
        with LoadSampler() as load:
            point = run_once(run_spec, inputs, WORK / f"curve-{minutes:g}", f"{minutes:g}min")
        point["load_average_1m"] = load.summary()
        point["date"] = time.strftime("%Y-%m-%d")
        point["machine"] = cpu_of(machine_info())
        point["command"] = command
        point["drop_points"] = round(100 * (reference["accuracy"] - point["accuracy"]), 3)
        points.append(point)
        print(f"[budget] {minutes:g} min: drop {point['drop_points']:+.2f}", file=sys.stderr)
        merged = merge_points(previous, points)
        result = {
            "reference": reference,
            "points": merged,
            "budget_for_half_point": half_point_budgets(merged),
        }
        save(result)
    return result


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


def read_curve(path: Path) -> dict[str, Any]:
    """budget_curve.json; points written before each named its own CPU and command take the
    file's."""
    result: dict[str, Any] = json.loads(path.read_text())
    for point in result["points"]:
        point.setdefault("machine", cpu_of(result["machine"]))
        point.setdefault("command", result["command"])
    # Files written before curves were kept per CPU held one number for all their points.
    result["budget_for_half_point"] = half_point_budgets(result["points"])
    return result


def _runtime_note(point: dict[str, Any]) -> str:
    """The runtime a job shipped, where it is not the int8 ONNX file."""
    runtime = point.get("runtime", "onnxruntime-int8")
    return "" if runtime == "onnxruntime-int8" else f" ({runtime})"


def _load_cell(load: dict[str, float] | None) -> str:
    return f"{load['mean']} ({load['max']})" if load else "-"


def curve_markdown(r: dict[str, Any]) -> str:
    runs = dict.fromkeys(p.get("command", r["command"]) for p in r["points"])
    commands = ", ".join(f"`{c}`" for c in runs) or f"`{r['command']}`"
    label = "Commands" if len(runs) > 1 else "Command"
    curves = curves_by_cpu(r["points"])
    lines = [
        "# Budget curve: what more budget buys",
        "",
        f"{label}: {commands}; {THREADS} threads; reference teacher (all labels) test "
        f"accuracy {r['reference']['accuracy']:.4f}. "
        f"Each job: the spec with teacher {GENEROUS['teacher_epochs']:g} / student "
        f"{GENEROUS['student_epochs']:g} epochs asked for, which the plan shrinks to fit the "
        "budget.",
    ]
    if len(curves) > 1:
        lines += [
            "",
            "One curve per CPU: the plan sizes the work to the device, so the same budget "
            "trains a faster CPU's job for more steps.",
        ]
    for cpu, points in curves.items():
        verdict = _curve_verdict(points, r["reference"]["accuracy"])
        lines += ["", f"## {cpu}", "", *_curve_table(points), "", verdict]
    lines += ["", "![drop vs budget](budget_curve.png)", ""]
    return "\n".join(lines)


def _curve_table(points: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| budget (min) | plan: teacher / student epochs | plan: steps | predicted min | "
        "wall min | job's teacher acc | test acc | drop (pts) | size × | speed × | "
        "1-min load mean (max) | date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        rows.append(
            f"| {p['budget_minutes']:g} | {p['plan']['teacher_epochs']:.2f} / "
            f"{p['plan']['student_epochs']:.2f} | {p['plan']['teacher_steps']} / "
            f"{p['plan']['student_steps']} | {p['predicted_minutes']:.1f} | "
            f"{p['wall_minutes']:.1f} | {p['job_teacher_accuracy']:.4f} | "
            f"{p['accuracy']:.4f} | {p['drop_points']:+.2f} | "
            f"{p['size_ratio']:.2f}{_runtime_note(p)} | {p['speed_ratio']:.2f} | "
            f"{_load_cell(p.get('load_average_1m'))} | {p.get('date', '-')} |"
        )
    return rows


def _runs_everything(point: dict[str, Any]) -> bool:
    plan = point["plan"]
    return bool(
        plan["teacher_epochs"] >= GENEROUS["teacher_epochs"]
        and plan["student_epochs"] >= GENEROUS["student_epochs"]
    )


def _curve_verdict(points: list[dict[str, Any]], reference: float) -> str:
    half = half_point_budget(points)
    done = [p["budget_minutes"] for p in points]
    missing = [b for b in CURVE_BUDGETS if b not in done]
    if half is not None:
        verdict = f"Drop ≤ 0.5 points first reached at: {half:g} min."
    else:
        verdict = (
            f"Drop ≤ 0.5 points not reached at any budget run so far "
            f"({', '.join(f'{b:g}' for b in done)} min)."
        )
    if missing:
        verdict += f" Not yet run: {', '.join(f'{b:g}' for b in missing)} min."
    largest = points[-1]
    teacher_gap = 100 * (reference - largest["job_teacher_accuracy"])
    verdict += (
        f" Where the {largest['budget_minutes']:g}-min job's {largest['drop_points']:.2f} "
        f"points go: its teacher (on the labels the job used) ends {teacher_gap:.2f} under "
        f"the reference before compression starts; teacher → compressed student costs "
        f"{largest['drop_points'] - teacher_gap:.2f}."
    )
    for p in points:
        if _runs_everything(p):
            verdict += (
                f" At {p['budget_minutes']:g} min the budget no longer binds: the plan runs "
                f"all {GENEROUS['teacher_epochs']:g} / {GENEROUS['student_epochs']:g} epochs "
                f"asked for ({p['predicted_minutes']:.0f} min predicted), so a larger budget "
                "trains nothing more on this CPU."
            )
            break
    for p in points:
        if not p["fits"]:
            verdict += (
                f" At {p['budget_minutes']:g} min the budget is too small for a useful plan on "
                f"this CPU: the job said so in its first events, ran the minimum plan (one "
                f"pass over the labels each) and took {p['wall_minutes']:.1f} min."
            )
    return verdict


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
    for cpu, points in curves_by_cpu(r["points"]).items():
        xs = [p["budget_minutes"] for p in points]
        ax.plot(xs, [p["drop_points"] for p in points], marker="o", label=cpu)
    budgets = sorted({p["budget_minutes"] for p in r["points"]})
    ax.axhline(1.0, color="grey", linestyle="--", label="promise: 1 point")
    ax.axhline(0.5, color="green", linestyle=":", label="aim: 0.5 point")
    ax.set_xscale("log")
    ax.minorticks_off()  # the budgets label the axis; log-scale minor labels only clutter it
    ax.set_xticks(budgets, [f"{x:g}" for x in budgets])
    ax.set_xlabel("budget (minutes, 2 CPU cores)")
    ax.set_ylabel("accuracy drop vs all-label teacher (points)")
    ax.legend(fontsize="small")
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
    parser.add_argument(
        "--render",
        action="store_true",
        help="curve: only rewrite budget_curve.{md,png} from budget_curve.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        result = read_curve(RESULTS / "budget_curve.json")
        (RESULTS / "budget_curve.md").write_text(curve_markdown(result))
        plot_curve(result, RESULTS / "budget_curve.png")
        return 0
    torch.set_num_threads(THREADS)
    spec, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    command = f"python -m bench.budget {args.what}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "curve":
        command += f" --budgets {args.budgets}"
        if args.spec != DEFAULT_SPEC:
            command += f" --spec {args.spec}"
        key = curve_key(spec)
        written = RESULTS / "budget_curve.json"
        earlier = read_curve(written) if written.is_file() else {}
        previous = earlier.get("points", []) if earlier.get("curve_key") == key else []

        def save(result: dict[str, Any]) -> None:
            result.update(command=command, machine=machine_info(), curve_key=key)
            written.write_text(json.dumps(result, indent=2) + "\n")
            (RESULTS / "budget_curve.md").write_text(curve_markdown(result))
            plot_curve(result, RESULTS / "budget_curve.png")

        budgets = [float(b) for b in args.budgets.split(",")]
        curve(spec, inputs, budgets, previous, save, command)
        return 0
    command += " --no-reference" if args.no_reference else ""
    result = load_check(spec, inputs, with_reference=not args.no_reference)
    result.update(command=command, machine=machine_info())
    (RESULTS / "load_independence.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "load_independence.md").write_text(load_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
