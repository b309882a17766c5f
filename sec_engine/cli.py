"""`python -m sec_engine run --spec SPEC.yaml --out DIR`: one job, no service needed.

The spec YAML is a JobSpec; its dataset fields are file paths (relative to the YAML file's
folder) and `base_model` is a built-in name, a local directory or a hub id. The artifact
directory has the same layout as the service's (see `sec_engine.export.artifact`).
`--checkpoint-dir DIR` saves the teacher phase there; rerunning the same spec with the same
DIR after a crash skips teacher training (see `sec_engine.checkpoint`).
`python -m sec_engine plan --spec SPEC.yaml` (or `run` on a spec with `dry_run: true`) prints
the job's plan for this device without training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sec_engine.callbacks import Phase, TraceRow
from sec_engine.errors import EngineError
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

app = typer.Typer(add_completion=False, help="The SEC engine: compress a model on a dataset.")
console = Console(stderr=True)


class ProgressCallbacks:
    """Drives a rich progress bar; shows λ1/λ2 and validation accuracy from the trace."""

    def __init__(self, bar: Progress, task: Any) -> None:
        self.bar = bar
        self.task = task
        self.status = ""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.bar.console.log(f"[bold]{kind}[/]: {message}")

    def trace(self, row: TraceRow) -> None:
        acc = "-" if row.val_accuracy is None else f"{row.val_accuracy:.4f}"
        self.status = f"λ1={row.lambda1:.3f} λ2={row.lambda2:.3f} val_acc={acc}"

    def progress(self, phase: Phase, fraction: float) -> None:
        self.bar.update(
            self.task, completed=fraction * 100, description=f"{phase} {self.status}".strip()
        )

    def should_cancel(self) -> bool:
        return False


def load_spec(path: Path) -> tuple[JobSpec, ResolvedInputs]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise typer.BadParameter(f"{path} must hold a mapping (the job spec)")
    spec = JobSpec.model_validate(raw)

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (path.parent / p).resolve()

    model_ref = spec.base_model
    local = resolve(model_ref)
    if local is not None and local.is_dir():
        model_ref = str(local)
    train = resolve(spec.dataset)
    assert train is not None
    inputs = ResolvedInputs(
        model=model_ref,
        train_path=train,
        validation_path=resolve(spec.validation_dataset),
        unlabelled_path=resolve(spec.unlabelled_dataset),
    )
    return spec, inputs


@app.command()
def run(
    spec_path: Annotated[
        Path, typer.Option("--spec", exists=True, dir_okay=False, help="Job spec YAML")
    ],
    out: Annotated[Path, typer.Option("--out", help="Artifact directory to write")],
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            file_okay=False,
            help="Save the teacher phase here, and resume from it when a run of the same spec "
            "on the same inputs saved it before",
        ),
    ] = None,
) -> None:
    """Run one job spec to completion and write the artifact directory."""
    from sec_engine.pipeline import run_job  # heavy imports only when a job runs

    spec, inputs = _load_or_exit(spec_path)
    if spec.dry_run:
        console.print("[yellow]the spec asks for a dry run: the plan, no training[/]")
        _print_plan(spec, inputs)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("preparing", total=100)
        try:
            result = run_job(
                spec, inputs, out, ProgressCallbacks(progress, task), checkpoint_dir=checkpoint_dir
            )
        except EngineError as exc:
            console.print(f"[red]{exc.code}[/]: {exc.message}")
            raise typer.Exit(1) from exc
    m = result.manifest
    summary = {
        "out": str(out),
        "teacher": {k: m["teacher"][k] for k in ("accuracy", "size_mb", "latency_ms_per_batch")},
        "compressed": {
            k: m["compressed"][k] for k in ("accuracy", "size_mb", "latency_ms_per_batch")
        },
        "ratios": m["ratios"],
        "targets_met": m["targets_met"],
    }
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def plan(
    spec_path: Annotated[
        Path, typer.Option("--spec", exists=True, dir_okay=False, help="Job spec YAML")
    ],
) -> None:
    """Dry run: calibrate on this device and print the job's plan, without training."""
    _print_plan(*_load_or_exit(spec_path))


def _load_or_exit(spec_path: Path) -> tuple[JobSpec, ResolvedInputs]:
    try:
        return load_spec(spec_path)
    except ValidationError as exc:
        console.print(f"[red]invalid spec[/]: {exc}")
        raise typer.Exit(2) from exc


def _print_plan(spec: JobSpec, inputs: ResolvedInputs) -> None:
    from sec_engine.pipeline import dry_run  # heavy imports only when asked

    try:
        result = dry_run(spec, inputs)
    except EngineError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.message}")
        raise typer.Exit(1) from exc
    for note in result["notes"]:
        console.print(f"[yellow]{note}[/]")
    typer.echo(json.dumps(result, indent=2))


@app.command()
def version() -> None:
    """Print the engine version."""
    from sec_engine import __version__

    typer.echo(__version__)


def main() -> None:
    app()
