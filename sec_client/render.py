"""Rich renderings shared by the CLI and `make demo`: tables and the live job progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sec_client.models import Dataset, Job, JobSnapshot, Plan, Prediction

METRIC_ROWS = (
    ("accuracy", "accuracy"),
    ("macro-F1", "macro_f1"),
    ("perplexity", "perplexity"),
    ("size (MB)", "size_mb"),
    ("latency (ms/batch)", "latency_ms_per_batch"),
)
# The plan's phases, in order: (label, key of predicted_seconds, which step count it trains).
PLAN_PHASES = (
    ("calibration", "calibration", None),
    ("teacher", "teacher", "teacher_steps"),
    ("data (ADA, TAL labels)", "data", None),
    ("student (compressing)", "compressing", "student_steps"),
    ("evaluating, exporting", "evaluating_exporting", None),
)
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "dim",
}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def metrics_table(job: Job) -> Table:
    """Teacher (before) vs compressed (after), measured in the same run, and their ratios."""
    metrics = job.metrics
    teacher, compressed = metrics.get("teacher") or {}, metrics.get("compressed") or {}
    table = Table(title=f"job {job.id}")
    table.add_column("metric")
    table.add_column("teacher (fp32)", justify="right")
    table.add_column("compressed", justify="right")
    for label, key in METRIC_ROWS:
        table.add_row(label, fmt(teacher.get(key)), fmt(compressed.get(key)))
    latency = compressed.get("latency") or {}
    if latency:
        table.add_row(
            "latency measured at",
            "",
            f"batch {latency.get('batch_size')}, seq {latency.get('seq_len')}, "
            f"{latency.get('threads')} threads, {latency.get('runtime')}",
        )
    for key, value in (metrics.get("ratios") or {}).items():
        table.add_row(f"ratio: {key}", "", fmt(value))
    if "labels_used" in metrics:
        labels = f"{metrics.get('labels_used')} of {metrics.get('labels_available')}"
        table.add_row("labels used", "", labels)
    if "wall_seconds" in metrics:
        table.add_row("wall time (s)", "", fmt(metrics.get("wall_seconds")))
    for key, met in job.targets_met.items():
        table.add_row(f"target {key}", "", "[green]met[/]" if met else "[red]missed[/]")
    return table


def plan_table(plan: Plan) -> Table:
    """Predicted minutes and steps per phase, the total against the budget, and whether a
    useful plan fits it."""
    title = f"plan ({plan.job_id})" if plan.job_id else "plan"
    table = Table(title=title)
    table.add_column("phase")
    table.add_column("predicted (min)", justify="right")
    table.add_column("steps", justify="right")
    for label, key, steps in PLAN_PHASES:
        seconds = plan.predicted_seconds.get(key)
        if seconds is None:
            continue
        count = "" if steps is None else str(getattr(plan, steps))
        table.add_row(label, f"{seconds / 60:.1f}", count)
    table.add_row("[bold]total[/]", f"[bold]{plan.predicted_minutes:.1f}[/]", "")
    table.add_row("budget (max_minutes)", f"{plan.budget_minutes:g}", "")
    fits = "[green]yes[/]" if plan.fits else "[red]no[/]"
    table.add_row("fits", fits, "")
    table.add_row("least useful plan needs", f"{plan.minimum_minutes:.1f}", "")
    table.add_row("the spec's own epochs need", f"{plan.full_minutes:.1f}", "")
    return table


def jobs_table(jobs: list[Job]) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True)  # ids are copied into the next command: never wrap
    for column in ("status", "phase", "progress", "base model", "created"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job.id,
            status_text(job.status),
            job.phase or "",
            f"{job.progress:.0%}",
            job.base_model,
            job.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    return table


def dataset_table(dataset: Dataset) -> Table:
    table = Table(title=f"dataset {dataset.id}", show_header=False)
    table.add_row("name", dataset.name)
    table.add_row("rows", f"{dataset.rows} ({dataset.labelled_rows} labelled)")
    table.add_row("sentence pairs", "yes" if dataset.has_pairs else "no")
    balance = dataset.summary.get("class_balance") or dataset.summary.get("labels")
    if balance:
        table.add_row("labels", fmt(balance))
    for problem in dataset.summary.get("problems") or []:
        table.add_row("[yellow]problem[/]", fmt(problem))
    return table


def predictions_table(inputs: list[str], predictions: list[Prediction]) -> Table:
    table = Table()
    table.add_column("input")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for text, p in zip(inputs, predictions, strict=True):
        short = text if len(text) <= 60 else text[:57] + "..."
        table.add_row(short, p.label, f"{p.probabilities.get(p.label, 0.0):.3f}")
    return table


def live_line(snapshot: JobSnapshot) -> str:
    """λ1, λ2 and the latest metrics of the controller, for the progress bar."""
    row = snapshot.trace
    if row is None:
        return ""
    parts = [f"step {row.step}", f"λ1 {row.lambda1:.3f}", f"λ2 {row.lambda2:.3f}"]
    if row.val_accuracy is not None:
        parts.append(f"val acc {row.val_accuracy:.3f}")
    if row.sparsity is not None:
        parts.append(f"sparsity {row.sparsity:.2f}")
    if row.size_mb is not None:
        parts.append(f"size {row.size_mb:.1f} MB")
    return "  ".join(parts)


class JobProgressView:
    """A rich progress bar (status / phase, %, elapsed, λ1 λ2 and metrics) plus event lines."""

    def __init__(self, console: Console, *, show_events: bool = True) -> None:
        self.console = console
        self.show_events = show_events
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[live]}"),
            console=console,
        )
        self._task: TaskID | None = None
        self._last_event: int | None = None

    @contextmanager
    def running(self) -> Iterator[JobProgressView]:
        with self._progress:
            self._task = self._progress.add_task("queued", total=1.0, live="")
            yield self

    def __call__(self, snapshot: JobSnapshot) -> None:
        """The `progress_callback` of `SecClient.wait_for_job`."""
        assert self._task is not None, "use inside running()"
        event = snapshot.event
        if self.show_events and event is not None and event.id != self._last_event:
            self._last_event = event.id
            self._progress.console.print(f"  [dim]{event.kind:<24}[/] {event.message}")
        description = f"{snapshot.status} {snapshot.phase or ''}".strip()
        self._progress.update(
            self._task,
            completed=snapshot.progress,
            description=description,
            live=live_line(snapshot),
        )
