"""bench/serving: hosted inference measured over loopback HTTP, in one run.

    python -m bench.serving [--clients 1,8,32,64] [--max-requests 1500] [--max-seconds 12]

Starts the real API (uvicorn, one process) in a subprocess on 127.0.0.1 with its own var
folder, registers the artifacts the way the worker does, deploys them through the API and
drives them with a closed-loop async httpx load generator (one Rotten Tomatoes snippet per
request) at each client count:

- `compressed`: the best SEC artifact found under var/ (else a stand-in, said so), int8
  ONNX, micro-batching on (the server defaults: max_batch_size 32, max_wait_ms 5);
- `compressed-unbatched`: the same artifact with max_batch_size 1: one request at a time;
- `teacher`: MiniLM-L6 (fresh 2-class head) exported as fp32 ONNX, served the same way.

Writes results.json, results.md (with the command and the machine) and results.png next to
this file. The load generator runs on the same machine as the server: on a small machine it
takes a real share of the CPU, which the numbers include.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from bench.serving.load import Scenario, run_scenario
from bench.serving.prepare import (
    BuiltArtifact,
    build_stand_in,
    build_teacher,
    find_sec_artifact,
    register,
    rotten_tomatoes_snippets,
)
from bench.serving.report import write_reports

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BATCHED = {"max_batch_size": 32, "max_wait_ms": 5.0}
UNBATCHED = {"max_batch_size": 1, "max_wait_ms": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_env(var_dir: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SEC_ENVIRONMENT": "development",
            "SEC_VAR_DIR": str(var_dir),
            "SEC_DATABASE_URL": f"sqlite:///{var_dir}/sec.db",
            "SEC_BROKER_URL": f"sqla+sqlite:///{var_dir}/broker.db",
            "SEC_ARTIFACT_URL": f"file://{var_dir}/artifacts",
            "SEC_LOG_LEVEL": "WARNING",
            "SEC_INFERENCE_THREADS": str(threads),
            "SEC_INFERENCE_QUEUE_SIZE": "4096",
            "SEC_INFERENCE_CACHE_MODELS": "4",
        }
    )
    return env


def _start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited early; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"the API did not come up in 90 s; see {log}")


def _deploy(base: str, api_key: str, artifact_id: str, config: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {api_key}"}
    r = httpx.post(
        f"{base}/v1/deployments",
        headers=headers,
        json={"artifact_id": artifact_id, **config},
        timeout=30,
    )
    r.raise_for_status()
    deployment_id: str = r.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/v1/deployments/{deployment_id}", headers=headers).json()
        if body["status"] == "ready":
            return deployment_id
        if body["status"] == "failed":
            raise SystemExit(f"deployment failed: {body['error_message']}")
        time.sleep(0.3)
    raise SystemExit("deployment did not become ready in 300 s")


def time_model(art: BuiltArtifact, work: Path, texts: list[str], threads: int) -> dict[str, Any]:
    """ms per input (wall and CPU) at batch 1 and 32, through the serving engine's own model
    code but without HTTP: what batching can gain in the model itself on this CPU."""
    import tarfile

    from app.serving.model import load_model

    with tarfile.open(art.archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    (top,) = [p for p in work.iterdir() if p.is_dir()]
    model = load_model(top, art.manifest, threads=threads)
    out: dict[str, Any] = {}
    for batch in (1, 32):
        model.predict(texts[:batch])  # warm
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), batch):
            model.predict(texts[i : i + batch])
        n = len(texts)
        out[f"batch_{batch}"] = {
            "wall_ms_per_input": round(1000 * (time.perf_counter() - wall) / n, 3),
            "cpu_ms_per_input": round(1000 * (time.process_time() - cpu) / n, 3),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--max-requests", type=int, default=1500)
    parser.add_argument("--max-seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--var", type=Path, default=ROOT / "var", help="where to look for SEC artifacts"
    )
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    command = " ".join(["python -m bench.serving", *(argv if argv is not None else sys.argv[1:])])

    work = Path(tempfile.mkdtemp(prefix="sec-bench-serving-"))
    proc: subprocess.Popen[bytes] | None = None
    started = time.time()
    try:
        print("building artifacts ...", flush=True)
        compressed: BuiltArtifact = find_sec_artifact(args.var) or build_stand_in(work)
        teacher = build_teacher(work)
        var_dir = work / "var"
        env = _server_env(var_dir, args.threads)
        settings = Settings(
            environment="development",
            var_dir=var_dir,
            database_url=env["SEC_DATABASE_URL"],
            broker_url=env["SEC_BROKER_URL"],
            artifact_url=env["SEC_ARTIFACT_URL"],
        )
        registered = register(settings, [compressed, teacher])
        texts = rotten_tomatoes_snippets(2000)
        print("timing the models in-process (no HTTP) ...", flush=True)
        model_only = {
            name: time_model(art, work / f"model-only-{name}", texts[:320], args.threads)
            for name, art in (("compressed", compressed), ("teacher", teacher))
        }

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        print(f"starting the API on {base} ...", flush=True)
        proc = _start_server(env, port, work / "server.log")
        deployments = {
            "compressed": _deploy(
                base, registered.api_key, registered.artifact_ids["compressed"], BATCHED
            ),
            "compressed-unbatched": _deploy(
                base, registered.api_key, registered.artifact_ids["compressed"], UNBATCHED
            ),
            "teacher": _deploy(
                base, registered.api_key, registered.artifact_ids["teacher"], BATCHED
            ),
        }
        results: list[dict[str, Any]] = []
        for name, deployment_id in deployments.items():
            for n in clients:
                scenario = asyncio.run(
                    run_scenario(
                        base,
                        registered.api_key,
                        Scenario(name, deployment_id, n),
                        texts,
                        max_requests=args.max_requests,
                        max_seconds=args.max_seconds,
                        warmup_requests=min(20, 2 * n),
                    )
                )
                summary = scenario.summary()
                results.append(summary)
                lat = summary["latency_ms"]
                print(
                    f"{name:22s} clients={n:3d} {summary['throughput_rps']:8.1f} req/s"
                    f"  p50={lat['p50']:7.1f} p95={lat['p95']:7.1f} p99={lat['p99']:7.1f} ms"
                    f"  statuses={summary['statuses']}",
                    flush=True,
                )
        write_reports(
            args.out,
            results=results,
            model_only=model_only,
            command=command,
            artifacts={"compressed": compressed, "teacher": teacher},
            config={"batched": BATCHED, "unbatched": UNBATCHED, "threads": args.threads},
            limits={"max_requests": args.max_requests, "max_seconds": args.max_seconds},
            wall_s=time.time() - started,
        )
        print(f"wrote {args.out}/results.json, results.md, results.png", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
