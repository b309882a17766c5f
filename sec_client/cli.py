"""The user's half of the `sec` command line, talking to the API through `SecClient`.

`app/cli.py` (the operator's half: serve, create-key, migrate) registers these commands on the
same `sec` app. Every command reads `SEC_API_URL` and `SEC_API_KEY` (or `--api-url` /
`--api-key` before the command). An API error prints the API's message and exits 1; a usage
error exits 2. `-q` prints only the new object's id, for scripts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from sec_client import render
from sec_client.client import DEFAULT_URL, SecClient
from sec_client.errors import SecAPIError, SecError
from sec_client.models import Job, Plan

P = ParamSpec("P")
R = TypeVar("R")

out = Console()
err = Console(stderr=True)

datasets_cli = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)
jobs_cli = typer.Typer(
    help="Plan, submit, watch, list and cancel compression jobs.", no_args_is_help=True
)
artifacts_cli = typer.Typer(help="Download compressed models.", no_args_is_help=True)
models_cli = typer.Typer(help="Base models (built-in and uploaded).", no_args_is_help=True)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def root_options(
    ctx: typer.Context,
    api_url: Annotated[
        str, typer.Option(envvar="SEC_API_URL", help="Base URL of the SEC API.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SEC_API_KEY", help="API key (`sec create-key` makes one).", show_default=False
        ),
    ] = None,
) -> None:
    """SEC: compress transformer classifiers as a service."""
    obj = ctx.ensure_object(dict)
    obj.setdefault("api_url", api_url)
    obj.setdefault("api_key", api_key)


def client(ctx: typer.Context) -> SecClient:
    """The client for this invocation. Tests put an `httpx.Client` under obj["http"]."""
    obj = ctx.ensure_object(dict)
    if not obj.get("api_key"):
        err.print(
            "[red]error:[/] no API key: set SEC_API_KEY or pass --api-key (see `sec create-key`)"
        )
        raise typer.Exit(2)
    http: httpx.Client | None = obj.get("http")
    return SecClient(obj.get("api_url") or DEFAULT_URL, obj["api_key"], http=http)


def api_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Print the API's error message (not a traceback) and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except SecAPIError as exc:
            err.print(f"[red]error:[/] {exc.message} [dim](HTTP {exc.status_code} {exc.code})[/]")
            raise typer.Exit(1) from None
        except SecError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None

    return wrapper


def emit(obj: Any, *, quiet: bool, as_json: bool, human: Callable[[], Any]) -> None:
    if quiet:
        typer.echo(obj.id)
    elif as_json:
        out.print_json(obj.model_dump_json())
    else:
        out.print(human())


# -- datasets --------------------------------------------------------------------------------


@datasets_cli.command("upload")
@api_command
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSONL file.")],
    purpose: Annotated[str, typer.Option(help="labelled or unlabelled (a pool).")] = "labelled",
    name: Annotated[str | None, typer.Option(help="A name; the file name by default.")] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset (columns text, optional text_pair, label) and show its summary."""
    with client(ctx) as sec:
        dataset = sec.upload_dataset(path, purpose=purpose, name=name)
    emit(dataset, quiet=quiet, as_json=as_json, human=lambda: render.dataset_table(dataset))


@datasets_cli.command("list")
@api_command
def datasets_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List your datasets, newest first."""
    with client(ctx) as sec:
        page = sec.list_datasets(limit=100)
    if as_json:
        out.print_json(page.model_dump_json())
        return
    table = Table()
    for column in ("id", "name", "rows", "labelled", "created"):
        table.add_column(column)
    for d in page.data:
        table.add_row(
            d.id, d.name, str(d.rows), str(d.labelled_rows), f"{d.created_at:%Y-%m-%d %H:%M}"
        )
    out.print(table)


@models_cli.command("list")
@api_command
def models_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Built-in base models (offline) and the ones you uploaded."""
    with client(ctx) as sec:
        models = sec.list_models()
    if as_json:
        out.print_json(json.dumps([m.model_dump(mode="json") for m in models]))
        return
    table = Table()
    for column in ("id", "kind", "architecture", "parameters", "available"):
        table.add_column(column)
    for m in models:
        params = f"{m.num_parameters / 1e6:.1f}M" if m.num_parameters else "-"
        table.add_row(m.id, m.kind, m.architecture, params, "yes" if m.available else "no")
    out.print(table)


@models_cli.command("upload")
@api_command
def models_upload(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help=".zip / .tar.gz: config, safetensors, tokenizer."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="A name; the file name by default.")] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Upload your own base model (HF format, safetensors only; no remote code)."""
    with client(ctx) as sec:
        model = sec.upload_model(path, name=name)
    emit(
        model,
        quiet=quiet,
        as_json=as_json,
        human=lambda: (
            f"uploaded model [bold]{model.id}[/] ({model.architecture}); use it as"
            f" `base_model: {model.id}`"
        ),
    )


# -- jobs ------------------------------------------------------------------------------------


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        err.print(f"[red]error:[/] {path} is not valid YAML: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(spec, dict):
        err.print(
            f"[red]error:[/] {path} must hold a mapping (a job spec), not {type(spec).__name__}"
        )
        raise typer.Exit(2)
    return spec


SpecPath = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, metavar="SPEC.yaml", help="Job spec.")
]
DatasetOpt = Annotated[str | None, typer.Option(help="Dataset id (overrides the spec's).")]
UnlabelledOpt = Annotated[str | None, typer.Option(help="Unlabelled pool dataset id.")]
BaseModelOpt = Annotated[str | None, typer.Option(help="Base model id or built-in name.")]
IdempotencyOpt = Annotated[
    str | None, typer.Option(help="Retry-safe key; a random one by default.")
]


def spec_with_overrides(
    path: Path, dataset: str | None, unlabelled_dataset: str | None, base_model: str | None
) -> dict[str, Any]:
    """The YAML spec at `path`, with the command line's dataset and model ids over its own."""
    spec = load_spec(path)
    overrides = {
        "dataset": dataset,
        "unlabelled_dataset": unlabelled_dataset,
        "base_model": base_model,
    }
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return spec


@jobs_cli.command("plan")
@api_command
def jobs_plan(
    ctx: typer.Context,
    spec_path: SpecPath,
    dataset: DatasetOpt = None,
    unlabelled_dataset: UnlabelledOpt = None,
    base_model: BaseModelOpt = None,
    idempotency_key: IdempotencyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan's JSON.")] = False,
) -> None:
    """Dry run: what the job would plan on its device (minutes and steps per phase, whether
    it fits the budget), without training. A worker loads the model and calibrates (about
    half a minute). Exits 0 once the plan is made, whether it fits or not."""
    spec = spec_with_overrides(spec_path, dataset, unlabelled_dataset, base_model)
    with client(ctx) as sec:
        if as_json:
            job = sec.dry_run(spec, idempotency_key=idempotency_key)
            out.print_json(json.dumps(job.metrics.get("plan")))
            return
        view = render.JobProgressView(out, show_events=False)
        with view.running():
            job = sec.dry_run(spec, idempotency_key=idempotency_key, progress_callback=view)
    _show_plan(Plan.from_job(job))


def _show_plan(plan: Plan) -> None:
    out.print(render.plan_table(plan))
    style = "yellow" if not plan.fits else "dim"
    for note in plan.notes:
        out.print(f"[{style}]{note}[/]")


@jobs_cli.command("submit")
@api_command
def jobs_submit(
    ctx: typer.Context,
    spec_path: SpecPath,
    dataset: DatasetOpt = None,
    unlabelled_dataset: UnlabelledOpt = None,
    base_model: BaseModelOpt = None,
    idempotency_key: IdempotencyOpt = None,
    watch: Annotated[bool, typer.Option(help="Watch the job until it ends.")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Submit a job from a YAML spec (see examples/); prints the new job."""
    spec = spec_with_overrides(spec_path, dataset, unlabelled_dataset, base_model)
    with client(ctx) as sec:
        job = sec.submit_job(spec, idempotency_key=idempotency_key)
        emit(
            job,
            quiet=quiet,
            as_json=as_json,
            human=lambda: (
                f"submitted [bold]{job.id}[/] ({job.status}); follow it with"
                f" `sec jobs watch {job.id}`"
            ),
        )
        if watch:
            raise typer.Exit(_watch(sec, job.id))


@jobs_cli.command("watch")
@api_command
def jobs_watch(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    poll: Annotated[
        bool, typer.Option(help="Poll instead of the server-sent-events stream.")
    ] = False,
    events: Annotated[bool, typer.Option(help="Print job events as they happen.")] = True,
) -> None:
    """Follow a job live (phase, progress, λ1/λ2, metrics) until it ends; exit 0 if it
    succeeded, 1 otherwise."""
    with client(ctx) as sec:
        raise typer.Exit(_watch(sec, job_id, use_stream=not poll, show_events=events))


def _watch(
    sec: SecClient, job_id: str, *, use_stream: bool = True, show_events: bool = True
) -> int:
    view = render.JobProgressView(out, show_events=show_events)
    with view.running():
        job = sec.wait_for_job(job_id, progress_callback=view, use_stream=use_stream)
    return _report(job)


def _report(job: Job) -> int:
    out.print(f"job [bold]{job.id}[/] {render.status_text(job.status)}")
    if job.error is not None:
        err.print(f"[red]{job.error.code}:[/] {job.error.message}")
    dry_run = bool(job.spec.get("dry_run"))
    if dry_run and "plan" in job.metrics:
        _show_plan(Plan.from_job(job))  # its notes say what its warnings say
    elif job.metrics:
        out.print(render.metrics_table(job))
    if job.artifact_id:
        out.print(
            f"artifact [bold]{job.artifact_id}[/]: `sec artifacts download {job.artifact_id}`"
        )
    if not dry_run:
        for warning in job.warnings:
            out.print(f"[bold yellow]warning:[/] [yellow]{warning}[/]")
    return 0 if job.status == "succeeded" else 1


@jobs_cli.command("list")
@api_command
def jobs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: AsJson = False,
) -> None:
    """Your jobs, newest first."""
    with client(ctx) as sec:
        page = sec.list_jobs(status=status, limit=limit)
    if as_json:
        out.print_json(page.model_dump_json())
    else:
        out.print(render.jobs_table(page.data))


@jobs_cli.command("get")
@api_command
def jobs_get(ctx: typer.Context, job_id: str, as_json: AsJson = False) -> None:
    """One job: status, phase, progress and (when done) teacher-vs-compressed metrics."""
    with client(ctx) as sec:
        job = sec.get_job(job_id)
    if as_json:
        out.print_json(job.model_dump_json())
        return
    out.print(render.jobs_table([job]))
    _report(job)


@jobs_cli.command("cancel")
@api_command
def jobs_cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a job (a running one stops at its next checkpoint)."""
    with client(ctx) as sec:
        job = sec.cancel_job(job_id)
    out.print(f"job [bold]{job.id}[/] {render.status_text(job.status)}")


# -- artifacts, deployments, predictions -----------------------------------------------------


def _artifact_id(sec: SecClient, job_or_artifact: str) -> str:
    """Commands take a job id or an artifact id: a job id means that job's artifact."""
    if not job_or_artifact.startswith("job_"):
        return job_or_artifact
    job = sec.get_job(job_or_artifact)
    if job.artifact_id is None:
        raise SecError(f"job {job.id} has no artifact (status {job.status})")
    return job.artifact_id


@artifacts_cli.command("download")
@api_command
def artifacts_download(
    ctx: typer.Context,
    job_or_artifact: Annotated[str, typer.Argument(help="An artifact id, or a job id.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File or folder to write to.")
    ] = Path("."),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the path.")] = False,
) -> None:
    """Download a compressed model archive and check its sha256."""
    with client(ctx) as sec:
        artifact_id = _artifact_id(sec, job_or_artifact)
        path = sec.download_artifact(artifact_id, output)
        sha = sec.get_artifact(artifact_id).sha256
    if quiet:
        typer.echo(str(path))
    else:
        out.print(f"[green]sha256 verified[/] {sha}")
        out.print(f"wrote [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)")


def deploy(
    ctx: typer.Context,
    job_or_artifact: Annotated[str, typer.Argument(help="An artifact id, or a job id.")],
    max_batch_size: Annotated[int | None, typer.Option(help="Largest micro-batch.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait to fill a batch.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the deployment is ready.")] = True,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Serve a compressed model behind a predict endpoint."""
    with client(ctx) as sec:
        artifact_id = _artifact_id(sec, job_or_artifact)
        deployment = sec.deploy(
            artifact_id, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, wait=wait
        )
    emit(
        deployment,
        quiet=quiet,
        as_json=as_json,
        human=lambda: (
            f"deployment [bold]{deployment.id}[/] {deployment.status}; call it with"
            f' `sec predict {deployment.id} "some text"`'
        ),
    )


def predict(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="Deployment id (dep_…).")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    text_pair: Annotated[
        list[str] | None,
        typer.Option(help="Second sentence for pair tasks; once per text, in order."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Classify texts with a deployed model: label and probability of each."""
    pairs = text_pair or []
    if pairs and len(pairs) != len(texts):
        err.print(f"[red]error:[/] {len(texts)} texts but {len(pairs)} --text-pair values")
        raise typer.Exit(2)
    inputs: list[str | tuple[str, str]] = (
        list(zip(texts, pairs, strict=True)) if pairs else list(texts)
    )
    with client(ctx) as sec:
        predictions = sec.predict(deployment_id, inputs)
    if as_json:
        out.print_json(json.dumps([p.model_dump() for p in predictions]))
    else:
        out.print(render.predictions_table(texts, predictions))


def register(cli: typer.Typer) -> None:
    """Add the user commands (and the global --api-url / --api-key) to the `sec` app."""
    cli.callback()(root_options)
    cli.add_typer(datasets_cli, name="datasets")
    cli.add_typer(models_cli, name="models")
    cli.add_typer(jobs_cli, name="jobs")
    cli.add_typer(artifacts_cli, name="artifacts")
    cli.command("deploy")(api_command(deploy))
    cli.command("predict")(api_command(predict))
