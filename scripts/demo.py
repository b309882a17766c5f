"""The README's run command (`make demo`): one real job, end to end, on embedded defaults.

1. prepare a seeded Rotten Tomatoes subset (800 labelled snippets + 100 plot summaries);
2. start the service in the background (`python -m app.launcher`: migrations, API, worker);
3. create a tenant and API key (the operator CLI, `sec create-key`);
4. over HTTP only, with the Python client (`sec_client`): upload the data, submit a MiniLM-L6
   job, follow its phase, progress, λ1/λ2 and events live, download the artifact and check
   its sha256 against the record;
5. print the metrics (teacher vs compressed) and where the artifact is, then stop the service.

State lives in `var/demo` (override with --var-dir); each run starts from a fresh folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from sec_client import Job, SecClient, SecError
from sec_client.render import JobProgressView, metrics_table
from sec_engine.data.rotten_tomatoes import write_subset

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console()

# Sized for about ten minutes on 2 CPU cores: short sequences, a few epochs, 70 % of the labels.
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
    # A size target too, so the runtime choice never ships the HF weights (65 MB: the int8
    # ONNX file is what makes the artifact several times smaller).
    "targets": {
        "min_compression": 4,
        "latency_batch_size": 32,
        "latency_seq_len": 64,
        "max_accuracy_drop": 0.03,
    },
    "seed": 0,
}


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


def upload(sec: SecClient, path: Path, purpose: str) -> str:
    dataset = sec.upload_dataset(path, purpose=purpose)
    console.print(f"uploaded [bold]{path.name}[/]: {dataset.rows} rows -> {dataset.id}")
    return dataset.id


def follow(sec: SecClient, job_id: str) -> Job:
    """A live progress bar (phase, %, λ1/λ2, metrics) and each event, until the job ends."""
    view = JobProgressView(console)
    with view.running():
        return sec.wait_for_job(job_id, progress_callback=view)


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
    for name in ("SEC_DATABASE_URL", "SEC_BROKER_URL", "SEC_STORE_URL"):
        env.pop(name, None)  # derived from SEC_VAR_DIR: the demo never touches other state
    log_path = var_dir / "service.log"
    console.print(f"starting the service on port {args.port} (log: {log_path})")
    proc = start_service(env, args.port, log_path)
    try:
        base = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=base, timeout=60) as anon:
            wait_ready(anon, proc, log_path)
        key = create_key(env)
        with SecClient(base, key, timeout=120) as sec:
            dataset_id = upload(sec, train, "labelled")
            pool_id = upload(sec, pool, "unlabelled")
            spec = {**JOB_SPEC, "dataset": dataset_id, "unlabelled_dataset": pool_id}
            job = sec.submit_job(spec)  # with an Idempotency-Key
            console.print(f"submitted [bold]{job.id}[/] ({job.status})")
            job = follow(sec, job.id)
            if job.status != "succeeded" or job.artifact_id is None:
                console.print(f"[red]job {job.status}[/]: {job.error}")
                return 1
            console.print(f"controller trace: {len(sec.trace(job.id))} steps")
            path = sec.download_artifact(job.artifact_id, var_dir)  # sha256 checked
            artifact = sec.get_artifact(job.artifact_id)
            console.print(f"[green]sha256 verified[/] {artifact.sha256}")
            console.print(metrics_table(job))
            console.print(f"artifact: [bold]{path}[/] ({artifact.size_bytes / 1e6:.1f} MB)")
        return 0
    except SecError as exc:  # the API's own message, not a traceback
        console.print(f"[red]error:[/] {exc}")
        return 1
    finally:
        console.print("stopping the service")
        stop_service(proc)


if __name__ == "__main__":
    sys.exit(main())
