"""bench/serving: hosted inference over loopback HTTP, and where each request's CPU goes.

    python -m bench.serving                  # the full run: 1/8/32/64 clients, 10 s each (~5 min)
    python -m bench.serving --quick          # smoke run: 1/64 clients, 3 s each (~1.5 min)
    python -m bench.serving --loadgen python # without wrk (apt-get install wrk)

Starts the real API (uvicorn, one process) in a subprocess on 127.0.0.1 with its own var
folder, registers the artifacts the way the worker does, deploys them through the API and
drives each with a closed-loop load generator (one Rotten Tomatoes snippet per request) at
each client count:

- `compressed`: the best SEC artifact found under var/ (else a stand-in, said so), int8
  ONNX, with the server's defaults: micro-batching on, no wait for a lone request, the batch
  size the deployment picks from its own measured curve;
- `compressed-unbatched`: the same artifact with max_batch_size 1: one request at a time;
- `teacher`: MiniLM-L6 (fresh 2-class head) exported as fp32 ONNX, server defaults.

The load generator is `wrk` (C, one thread, a Lua script with the request bytes built once)
when it is installed, else an async httpx client per simulated user (`--loadgen`); the
report says which, and what it cost per request. For each scenario the bench reads the API
process's CPU time (psutil: user + system, every thread) before and after, and the server's
mean batch size (`/metrics`), and splits the server's CPU per request into the model's share
(the in-process curve of the same model, same threads, same texts, at that batch size:
bench/serving/model_curve.py), the tokenizer's and the rest (HTTP, validation, auth, rate
limit, batching, JSON).

Writes results.json, results.md (each serving target of docs/DESIGN_NOTES.md#targets with
its measured value, met or not) and results.png next to this file; `--quick` writes
results.quick.* instead.
"""

from __future__ import annotations

import argparse
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
from prometheus_client.parser import text_string_to_metric_families

from bench.serving import wrk
from bench.serving.cpu import ModelCurve, process_cpu_s, split_request_cpu
from bench.serving.load import LoadResult, run_python
from bench.serving.model_curve import QUICK_SIZES, SIZES, measure_model
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
BATCHED: dict[str, Any] = {}  # the server's defaults
UNBATCHED = {"max_batch_size": 1}
WARMUP_REQUESTS = 20


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
            "SEC_STORE_URL": f"file://{var_dir}/artifacts",
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


def _deploy(base: str, api_key: str, artifact_id: str, config: dict[str, Any]) -> dict[str, Any]:
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
        body: dict[str, Any] = httpx.get(
            f"{base}/v1/deployments/{deployment_id}", headers=headers
        ).json()
        if body["status"] == "ready":
            return body
        if body["status"] == "failed":
            raise SystemExit(f"deployment failed: {body['error_message']}")
        time.sleep(0.3)
    raise SystemExit("deployment did not become ready in 300 s")


def picked_batch_sizes(base: str) -> dict[str, int]:
    """deployment id -> the largest batch the server picked for it (`/metrics`)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return {
        sample.labels["deployment"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "sec_inference_batch_size"
        for sample in family.samples
    }


def batch_stats(base: str) -> tuple[float, float]:
    """(inputs, batches) the server has handed to its models so far (`/metrics`)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "sec_inference_batch_rows":
            for sample in family.samples:
                for suffix in values:
                    if sample.name.endswith("_" + suffix):
                        values[suffix] = sample.value
    return values["sum"], values["count"]


def run_scenario(
    *,
    base: str,
    api_key: str,
    name: str,
    deployment_id: str,
    clients: int,
    seconds: float,
    loadgen: str,
    bodies: list[dict[str, Any]],
    bodies_file: Path,
    work: Path,
    server_pid: int,
    curve: ModelCurve,
) -> dict[str, Any]:
    path = f"/v1/deployments/{deployment_id}/predict"
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(headers=headers, timeout=60) as client:
        for body in bodies[:WARMUP_REQUESTS]:
            client.post(base + path, json=body).raise_for_status()
    inputs_before, batches_before = batch_stats(base)
    cpu_before = process_cpu_s(server_pid)
    result: LoadResult = (
        wrk.run_wrk(base, path, api_key, bodies_file, clients=clients, seconds=seconds, work=work)
        if loadgen == "wrk"
        else run_python(base, path, api_key, bodies, clients=clients, seconds=seconds)
    )
    server_cpu = process_cpu_s(server_pid) - cpu_before
    inputs_after, batches_after = batch_stats(base)
    batches = batches_after - batches_before
    mean_batch = (inputs_after - inputs_before) / batches if batches else 1.0
    answered = max(1, result.requests - result.socket_errors)
    return {
        "deployment": name,
        "clients": clients,
        "requests_ok": result.ok,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "duration_s": round(result.duration_s, 3),
        "throughput_rps": round(result.throughput_rps, 2),
        "latency_ms": result.latency_ms,
        "mean_batch": round(mean_batch, 2),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_ms_per_request": split_request_cpu(
            server_cpu, answered, curve, mean_batch=mean_batch
        ),
        "client_cpu_ms_per_request": round(1000 * result.client_cpu_s / answered, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 64 clients, 3 s each")
    parser.add_argument("--clients", default=None, help="comma-separated (default 1,8,32,64)")
    parser.add_argument("--seconds", type=float, default=None, help="per scenario (default 10)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--var", type=Path, default=ROOT / "var", help="where to look for SEC artifacts"
    )
    args = parser.parse_args(argv)
    clients = [int(c) for c in (args.clients or ("1,64" if args.quick else "1,8,32,64")).split(",")]
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if wrk.available() else "python"
    if loadgen == "wrk" and not wrk.available():
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --loadgen python")
    command = " ".join(["python -m bench.serving", *(argv if argv is not None else sys.argv[1:])])

    work = Path(tempfile.mkdtemp(prefix="sec-bench-serving-"))
    proc: subprocess.Popen[bytes] | None = None
    started = time.time()
    try:
        print("building artifacts ...", flush=True)
        compressed: BuiltArtifact = find_sec_artifact(args.var) or build_stand_in(work)
        teacher = build_teacher(work)
        artifacts = {"compressed": compressed, "teacher": teacher}
        var_dir = work / "var"
        env = _server_env(var_dir, args.threads)
        from app.settings import Settings

        settings = Settings(
            environment="development",
            var_dir=var_dir,
            database_url=env["SEC_DATABASE_URL"],
            broker_url=env["SEC_BROKER_URL"],
            store_url=env["SEC_STORE_URL"],
        )
        registered = register(settings, [compressed, teacher])
        texts = rotten_tomatoes_snippets(2000)
        bodies = [{"inputs": [t]} for t in texts]
        bodies_file = wrk.write_inputs(work / "bodies.jsonl", bodies)

        print("timing the models in-process (no HTTP) ...", flush=True)
        sizes = QUICK_SIZES if args.quick else SIZES
        curves = {
            name: measure_model(
                art.archive,
                art.manifest,
                work / f"model-only-{name}",
                texts[: 128 if args.quick else 320],
                threads=args.threads,
                sizes=sizes,
                rounds=2 if args.quick else 3,
            )
            for name, art in artifacts.items()
        }
        for name, curve in curves.items():
            print(f"  {name}: {curve.to_dict()}", flush=True)

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        print(f"starting the API on {base} ...", flush=True)
        proc = _start_server(env, port, work / "server.log")
        plan = {
            "compressed": ("compressed", BATCHED),
            "compressed-unbatched": ("compressed", UNBATCHED),
            "teacher": ("teacher", BATCHED),
        }
        deployments = {
            name: _deploy(base, registered.api_key, registered.artifact_ids[art], config)
            for name, (art, config) in plan.items()
        }
        picked = picked_batch_sizes(base)
        deployed = {
            name: {**d["config"], "batch_size_picked": picked.get(d["id"])}
            for name, d in deployments.items()
        }
        print(f"deployments: {deployed}", flush=True)
        results: list[dict[str, Any]] = []
        # Client count outside, deployment inside: the batched / one-at-a-time pair at each
        # concurrency runs back to back, so drift over the run (warm caches, the box's other
        # work) does not land on one side of the ratio the target judges.
        for n in clients:
            for name, deployment in deployments.items():
                row = run_scenario(
                    base=base,
                    api_key=registered.api_key,
                    name=name,
                    deployment_id=deployment["id"],
                    clients=n,
                    seconds=seconds,
                    loadgen=loadgen,
                    bodies=bodies,
                    bodies_file=bodies_file,
                    work=work,
                    server_pid=proc.pid,
                    curve=curves[plan[name][0]],
                )
                results.append(row)
                lat, cpu = row["latency_ms"], row["server_cpu_ms_per_request"]
                print(
                    f"{name:22s} clients={n:3d} {row['throughput_rps']:8.1f} req/s"
                    f"  p50={lat['p50']:7.2f} p99={lat['p99']:7.2f} ms  batch={row['mean_batch']:5.1f}"
                    f"  server CPU/req {cpu['total_ms']:.3f} ms (model {cpu['model_ms']:.3f},"
                    f" rest {cpu['rest_ms']:.3f})  non-2xx={row['non_2xx']}",
                    flush=True,
                )
        order = list(deployments)
        results.sort(key=lambda r: (order.index(r["deployment"]), r["clients"]))
        suffix = ".quick" if args.quick else ""
        write_reports(
            args.out,
            suffix=suffix,
            results=results,
            curves={name: c.to_dict() for name, c in curves.items()},
            command=command,
            artifacts=artifacts,
            deployments=deployed,
            loadgen=loadgen,
            threads=args.threads,
            seconds=seconds,
            wall_s=time.time() - started,
        )
        print(f"wrote {args.out}/results{suffix}.json, .md, .png", flush=True)
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
