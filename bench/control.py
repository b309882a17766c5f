"""`python -m bench.control`: the API's CPU per request on the control API's hot routes.

One client sends requests one after another to a real API process (uvicorn, Postgres, the
Celery producer on Redis), so the server's CPU per request is its process CPU (psutil, every
thread) over the requests sent, with nothing else queued in it. Routes: submit
(`POST /v1/jobs` with a fresh `Idempotency-Key`, the job published to the broker), job
status, events and artifact download.

`--profile` runs the API under yappi (CPU clock, every thread) and prints the functions with
the largest share of the run; profiling slows everything, so its CPU figures are not the
plain ones. Postgres and Redis come from `SEC_TEST_POSTGRES_URL` / `SEC_TEST_REDIS_URL` (the
test suite's servers): a private database is made and dropped, a free Redis db is claimed
and flushed.

    python -m bench.control --requests 300
    python -m bench.control --routes submit --requests 300 --profile
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from sqlalchemy.engine import make_url

from app.db.models import Artifact, ArtifactStatus, Dataset, Job, JobStatus
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.launcher import api_command, settings_env
from app.settings import Settings
from app.storage import store_from_settings
from app.tenants import service as tenants

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SERVER = os.environ.get(
    "SEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER = os.environ.get("SEC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ROUTES = ("submit", "status", "events", "download")
_REDIS_LOCK_KEY = "sec-test:db-owner"  # the same claim the test fixtures use


@contextmanager
def private_postgres() -> Iterator[str]:
    import psycopg

    admin = make_url(POSTGRES_SERVER).set(drivername="postgresql")
    admin_url = admin.render_as_string(hide_password=False)
    name = f"sec_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_redis() -> Iterator[str]:
    import redis

    token = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}", socket_connect_timeout=5)
        if client.set(_REDIS_LOCK_KEY, token, nx=True, ex=3600):
            if client.dbsize() != 1:
                client.delete(_REDIS_LOCK_KEY)
                client.close()
                continue
            try:
                yield f"{REDIS_SERVER}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis database (1-15)")


def seed(settings: Settings, workdir: Path, artifact_kb: int = 100) -> tuple[str, str, str, str]:
    """A tenant's key, a labelled dataset, a job with a few events and a ready artifact."""
    from app.db.migrate import upgrade

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    payload = (b"\x1f\x8b fake archive bytes " * 64 * artifact_kb)[: 1024 * artifact_kb]
    src = workdir / "artifact.tar.gz"
    src.write_bytes(payload)
    try:
        with unit_of_work(make_sessionmaker(engine)) as s:
            tenant = tenants.get_or_create_tenant(s, "bench")
            _, key = tenants.create_api_key(s, tenant.id)
            dataset = Dataset(
                tenant_id=tenant.id, name="d.csv", format="csv", storage_path="d.csv",
                size_bytes=100, sha256="0" * 64, rows=4, labelled_rows=4, has_pairs=False,
                summary={"labels": ["neg", "pos"], "rows": 4},
            )  # fmt: skip
            s.add(dataset)
            s.flush()
            job = Job(
                tenant_id=tenant.id, dataset_id=dataset.id, base_model="tiny-bert",
                spec={"dataset": dataset.id}, status=JobStatus.SUCCEEDED.value,
            )  # fmt: skip
            s.add(job)
            s.flush()
            from app.jobs import state_machine

            for i in range(5):
                state_machine.add_event(s, job.id, 0, "progress", f"event {i}", {"i": i})
            storage_key = f"{tenant.id}/{job.id}/artifact.tar.gz"
            store_from_settings(settings).put_file(storage_key, src)
            artifact = Artifact(
                tenant_id=tenant.id, job_id=job.id, status=ArtifactStatus.READY.value,
                storage_key=storage_key, size_bytes=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(), files=[], manifest={},
            )  # fmt: skip
            s.add(artifact)
            s.flush()
            return key, dataset.id, job.id, artifact.id
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def requests_for(
    route: str, client: httpx.Client, headers: dict[str, str], ids: tuple[str, str, str, str]
) -> Callable[[], httpx.Response]:
    _, dataset, job, artifact = ids
    if route == "submit":
        return lambda: client.post(
            "/v1/jobs",
            json={"dataset": dataset},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
    if route == "status":
        return lambda: client.get(f"/v1/jobs/{job}", headers=headers)
    if route == "events":
        return lambda: client.get(f"/v1/jobs/{job}/events", headers=headers)
    if route == "download":
        return lambda: client.get(f"/v1/artifacts/{artifact}/download", headers=headers)
    raise ValueError(route)


def measure(
    url: str,
    pid: int,
    routes: list[str],
    n: int,
    ids: tuple[str, str, str, str],
    *,
    profile: bool = False,
) -> dict[str, tuple[float, float]]:
    """Per route: (server CPU ms per request, client-seen wall ms per request)."""
    headers = {"Authorization": f"Bearer {ids[0]}"}
    proc = psutil.Process(pid)
    out: dict[str, tuple[float, float]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for route in routes:
            send = requests_for(route, client, headers, ids)
            for _ in range(max(20, n // 10)):  # warm up: caches, pools, code paths
                r = send()
                assert r.status_code < 300, r.text
            if profile and route == routes[0]:
                proc.send_signal(signal.SIGUSR1)  # bench.control_server starts yappi
                time.sleep(0.2)
            cpu0 = _cpu(proc)
            t0 = time.perf_counter()
            for _ in range(n):
                r = send()
                assert r.status_code < 300, r.text
            wall = time.perf_counter() - t0
            out[route] = ((_cpu(proc) - cpu0) * 1000 / n, wall * 1000 / n)
    return out


def burst(url: str, n: int, ids: tuple[str, str, str, str]) -> list[tuple[str, float]]:
    """`n` clients, each on a new connection, send one request at the same moment (a third
    submit, the rest download, as the load test's first second): (route, seconds) each."""
    import threading

    headers = {"Authorization": f"Bearer {ids[0]}"}
    start = threading.Barrier(n)
    out: list[tuple[str, float]] = []

    def one(i: int) -> None:
        route = "submit" if i % 3 == 0 else "download"
        with httpx.Client(base_url=url, timeout=60) as client:
            send = requests_for(route, client, headers, ids)
            start.wait()
            t0 = time.perf_counter()
            r = send()
            out.append((route, time.perf_counter() - t0))
            assert r.status_code < 300, r.text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _report_burst(name: str, times: list[tuple[str, float]]) -> None:
    ms = sorted(t * 1000 for _, t in times)
    by_route = {r: max(t * 1000 for route, t in times if route == r) for r in {r for r, _ in times}}
    print(
        f"burst {name}: {len(ms)} requests, median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms;"
        " max by route " + ", ".join(f"{r} {v:.0f} ms" for r, v in sorted(by_route.items()))
    )


def _cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def wait_up(url: str, api: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API never came up\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="measured requests per route")
    ap.add_argument(
        "--routes", default=",".join(ROUTES), help="comma-separated: " + ",".join(ROUTES)
    )
    ap.add_argument("--profile", action="store_true", help="run the API under yappi")
    ap.add_argument(
        "--burst",
        type=int,
        default=0,
        help="instead: this many simultaneous first requests on a fresh API, then again warm",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measure the routes this many times in turn and keep each route's lowest figure"
        " (the least disturbed by other load on the machine)",
    )
    ap.add_argument(
        "--app-root",
        type=Path,
        default=REPO_ROOT,
        help="run the API from this checkout (another commit, for a before/after on the same"
        " machine at the same time); the database schema must be the same",
    )
    ap.add_argument(
        "--artifact-kb", type=int, default=100, help="size of the downloaded archive, in KiB"
    )
    ap.add_argument("--top", type=int, default=45, help="functions listed with --profile")
    args = ap.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    with (
        tempfile.TemporaryDirectory(prefix="sec-bench-control-") as tmp,
        private_postgres() as db_url,
        private_redis() as redis_url,
    ):
        workdir = Path(tmp)
        settings = Settings(
            environment="test",
            var_dir=workdir / "var",
            database_url=db_url,
            broker_url=redis_url,
            max_concurrent_jobs_per_tenant=1_000_000,
            rate_limit_per_minute=1_000_000,
            log_level="WARNING",
        )
        ids = seed(settings, workdir, args.artifact_kb)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = settings_env(settings)
        env["PYTHONPATH"] = str(args.app_root)
        stats = workdir / "yappi.txt"
        if args.profile:
            cmd = [sys.executable, "-m", "bench.control_server", str(port), str(stats)]
        else:
            cmd = api_command("127.0.0.1", port, "warning")
        log = workdir / "api.log"
        results: dict[str, tuple[float, float]] = {}
        with log.open("wb") as log_f:
            api = subprocess.Popen(cmd, cwd=args.app_root, env=env, stdout=log_f, stderr=log_f)
            try:
                wait_up(url, api, log)
                if args.burst:
                    if args.profile:  # the cold burst only
                        api.send_signal(signal.SIGUSR1)
                        time.sleep(0.2)
                    cpu0 = _cpu(psutil.Process(api.pid))
                    cold = burst(url, args.burst, ids)
                    cpu1 = _cpu(psutil.Process(api.pid))
                    if args.profile:
                        api.send_signal(signal.SIGUSR2)
                    time.sleep(1)
                    warm = burst(url, args.burst, ids)
                    cpu2 = _cpu(psutil.Process(api.pid))
                else:
                    for _ in range(1 if args.profile else max(1, args.repeat)):
                        got = measure(
                            url, api.pid, routes, args.requests, ids, profile=args.profile
                        )
                        for route, figures in got.items():
                            if route not in results or figures[0] < results[route][0]:
                                results[route] = figures
            finally:
                api.terminate()
                api.wait(timeout=60)
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if args.burst:
            _report_burst(f"cold (API CPU {1000 * (cpu1 - cpu0):.0f} ms)", cold)
            _report_burst(f"warm (API CPU {1000 * (cpu2 - cpu1):.0f} ms)", warm)
        else:
            runs = 1 if args.profile else max(1, args.repeat)
            print(f"{args.requests} requests per route, one client; lowest of {runs} runs")
            print(f"{'route':10} {'server CPU ms/req':>18} {'wall ms/req':>12}")
            for route, (cpu_ms, wall_ms) in results.items():
                print(f"{route:10} {cpu_ms:18.2f} {wall_ms:12.2f}")
        if args.profile:
            lines = stats.read_text().splitlines()
            print("\n".join(lines[: args.top + 8]))


if __name__ == "__main__":
    main()
