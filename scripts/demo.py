"""The README's run command (`make demo`): one real job, end to end, on embedded defaults.

1. prepare a seeded Rotten Tomatoes subset (800 labelled snippets + 100 plot summaries);
2. start the service in the background (`python -m app.launcher`: migrations, API, worker);
3. create a tenant and API key (the operator CLI, `sec create-key`);
4. over HTTP only: upload the data, submit a MiniLM-L6 job, follow its phase, progress and
   events, download the artifact and check its sha256 against the record;
5. print the metrics (teacher vs compressed) and where the artifact is, then stop the service.

State lives in `var/demo` (override with --var-dir); each run starts from a fresh folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sec_engine.data.rotten_tomatoes import write_subset

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console()

# Sized for a few minutes on 2 CPU cores: short sequences, a few epochs, 70 % of the labels.
JOB_SPEC: dict[str, Any] = {
    "base_model": "minilm-l6",
    "budget": {"max_minutes": 12, "label_budget": 0.7},
    "training": {
        "batch_size": 32,
        "max_seq_len": 64,
        "learning_rate": 1e-4,
        "teacher_epochs": 4,
        "student_epochs": 3,
        "eval_every_steps": 10,
    },
    "targets": {"latency_batch_size": 32, "latency_seq_len": 64, "max_accuracy_drop": 0.03},
    "seed": 0,
}
TERMINAL = {"succeeded", "failed", "cancelled"}


def start_service(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app.launcher", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited early; see {log_path}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not come up in 120 s; see {log_path}")


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "create-key", "--tenant", "demo"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def check(response: httpx.Response, expected: int = 200) -> dict[str, Any]:
    if response.status_code != expected:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def upload(client: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as fh:
        r = client.post(
            "/v1/datasets", files={"file": (path.name, fh, "text/csv")}, data={"purpose": purpose}
        )
    body = check(r, 201)
    console.print(f"uploaded [bold]{path.name}[/]: {body['rows']} rows -> {body['id']}")
    return str(body["id"])


def follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Show phase/progress as a bar and print each new event until the job ends."""
    cursor = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("queued", total=1.0)
        while True:
            job = check(client.get(f"/v1/jobs/{job_id}"))
            page = check(client.get(f"/v1/jobs/{job_id}/events", params={"after": cursor}))
            for event in page["data"]:
                console.print(f"  [dim]{event['kind']:<24}[/] {event['message']}")
            cursor = page["next_cursor"]
            phase = job["phase"] or ""
            bar.update(task, completed=job["progress"], description=f"{job['status']} {phase}")
            if job["status"] in TERMINAL:
                return job
            time.sleep(1.0)


def download(client: httpx.Client, artifact: dict[str, Any], dest: Path) -> Path:
    digest = hashlib.sha256()
    path = dest / f"{artifact['id']}.tar.gz"
    with client.stream("GET", artifact["download_url"]) as r, path.open("wb") as fh:
        if r.status_code != 200:
            raise SystemExit(f"download failed: {r.status_code}")
        header = r.headers.get("X-Checksum-SHA256")
        for chunk in r.iter_bytes():
            fh.write(chunk)
            digest.update(chunk)
    if digest.hexdigest() != artifact["sha256"] or header != artifact["sha256"]:
        raise SystemExit(f"sha256 mismatch: got {digest.hexdigest()}, record {artifact['sha256']}")
    console.print(f"[green]sha256 verified[/] {artifact['sha256']}")
    return path


ROWS = (
    ("accuracy", "accuracy"),
    ("macro-F1", "macro_f1"),
    ("perplexity", "perplexity"),
    ("size (MB)", "size_mb"),
    ("latency (ms/batch)", "latency_ms_per_batch"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table(job: dict[str, Any]) -> Table:
    """Teacher vs compressed, measured in the same run, and the ratios between them."""
    metrics = job["metrics"]
    teacher, compressed = metrics.get("teacher") or {}, metrics.get("compressed") or {}
    table = Table(title=f"job {job['id']}")
    table.add_column("metric")
    table.add_column("teacher (fp32)", justify="right")
    table.add_column("compressed", justify="right")
    for label, key in ROWS:
        table.add_row(label, _fmt(teacher.get(key)), _fmt(compressed.get(key)))
    latency = compressed.get("latency") or {}
    if latency:
        table.add_row(
            "latency measured at",
            "",
            f"batch {latency.get('batch_size')}, seq {latency.get('seq_len')}, "
            f"{latency.get('threads')} threads, {latency.get('runtime')}",
        )
    for key, value in (metrics.get("ratios") or {}).items():
        table.add_row(f"ratio: {key}", "", _fmt(value))
    labels = f"{metrics.get('labels_used')} of {metrics.get('labels_available')}"
    table.add_row("labels used", "", labels)
    table.add_row("wall time (s)", "", _fmt(metrics.get("wall_seconds")))
    for key, met in (job.get("targets_met") or {}).items():
        table.add_row(f"target {key}", "", "[green]met[/]" if met else "[red]missed[/]")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description="Run one real SEC job end to end.")
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var" / "demo")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    var_dir: Path = args.var_dir.resolve()
    shutil.rmtree(var_dir, ignore_errors=True)
    data_dir = var_dir / "data"
    train, pool = write_subset(data_dir, labelled=800, unlabelled=100)
    console.print(f"data: {train} and {pool}")

    env = {**os.environ, "SEC_VAR_DIR": str(var_dir)}
    for name in ("SEC_DATABASE_URL", "SEC_BROKER_URL", "SEC_ARTIFACT_URL"):
        env.pop(name, None)  # derived from SEC_VAR_DIR: the demo never touches other state
    log_path = var_dir / "service.log"
    console.print(f"starting the service on port {args.port} (log: {log_path})")
    proc = start_service(env, args.port, log_path)
    try:
        base = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=base, timeout=60) as anon:
            wait_ready(anon, proc, log_path)
        key = create_key(env)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            dataset_id = upload(client, train, "labelled")
            pool_id = upload(client, pool, "unlabelled")
            spec = {**JOB_SPEC, "dataset": dataset_id, "unlabelled_dataset": pool_id}
            job = check(
                client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": uuid.uuid4().hex}),
                201,
            )
            console.print(f"submitted [bold]{job['id']}[/] ({job['status']})")
            job = follow(client, job["id"])
            if job["status"] != "succeeded":
                console.print(f"[red]job {job['status']}[/]: {job.get('error')}")
                return 1
            trace = check(client.get(f"/v1/jobs/{job['id']}/trace"))["data"]
            console.print(f"controller trace: {len(trace)} steps")
            artifact = check(client.get(f"/v1/jobs/{job['id']}/artifacts"))["data"][0]
            path = download(client, artifact, var_dir)
            console.print(metrics_table(job))
            console.print(f"artifact: [bold]{path}[/] ({artifact['size_bytes'] / 1e6:.1f} MB)")
        return 0
    finally:
        console.print("stopping the service")
        stop_service(proc)


if __name__ == "__main__":
    sys.exit(main())
