"""One command for the embedded shape: migrate, then run the API and a worker side by side.

`sec serve` (or `python -m app.launcher`) runs, with the current settings:

1. `alembic upgrade head` on the database;
2. uvicorn with the app factory `app.main:create_app` (a child process);
3. a Celery worker consuming `gpu` and `cpu` with one prefork child, prefetch 1 and an
   embedded beat (`-B`) that runs the reaper every minute (a child process);
4. a reaper run right away, so jobs left behind by a previous run are taken care of.

The children get the launcher's settings through `SEC_*` variables, so all three agree on the
database, broker and folders. They run in their own process groups: Ctrl-C reaches only the
launcher, which stops the API, gives the worker a short warm shutdown, then a cold one. A job
interrupted that way keeps its lease until it expires and is then retried by the reaper.
A second Ctrl-C kills everything at once. If either child dies, the other is stopped too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from app.settings import Settings, get_settings

logger = logging.getLogger("sec.launcher")

WORKER_GRACE_SECONDS = 10.0
API_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment for a child: the current one plus every setting as `SEC_<NAME>`."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            env[f"SEC_{name.upper()}"] = json.dumps(value)  # pydantic-settings parses JSON
        else:
            env[f"SEC_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return env


def api_command(host: str, port: int, log_level: str, processes: int = 1) -> list[str]:
    """uvicorn with the app factory. `processes` > 1 runs that many API processes on one
    socket (uvicorn `--workers`), a stand-in on one machine for the production shape's N
    replicas; each has its own model cache and Prometheus histograms (app.metrics)."""
    cmd = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", host, "--port", str(port), "--log-level", log_level.lower(),
        "--no-access-log",  # the app logs every request itself (app.logging)
    ]  # fmt: skip
    return [*cmd, "--workers", str(processes)] if processes > 1 else cmd


def worker_command(log_level: str, *, beat: bool = True) -> list[str]:
    cmd = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", "gpu,cpu", "--pool", "prefork", "--concurrency", "1",
        "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
        "--hostname", f"sec-embedded-{os.getpid()}@%h", "--loglevel", log_level.upper(),
    ]  # fmt: skip
    return [*cmd, "--beat"] if beat else cmd


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the launcher dies, so a killed launcher leaves no orphans."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    grace: float
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            self.argv, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal_main(self, sig: int) -> None:
        """Signal only the child itself: Celery's warm shutdown then stops its pool in order."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


class _Stop:
    """Counts stop signals: the first asks for a clean shutdown, the second for a kill."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        logger.info("received %s (%d)", signal.Signals(signum).name, self.count)


def _shutdown(children: list[Child], stop: _Stop) -> None:
    """API: SIGTERM (uvicorn drains). Worker: SIGTERM (warm), then SIGQUIT (cold), then SIGKILL."""
    for child in children:
        child.signal_main(signal.SIGTERM)
    for child in children:
        deadline = time.monotonic() + child.grace
        while time.monotonic() < deadline and stop.count < 2 and not child.wait(0.2):
            pass
        if child.poll() is None:
            logger.info("%s did not stop in %.0f s; forcing it", child.name, child.grace)
            child.signal_group(signal.SIGQUIT)
            if not child.wait(3.0):
                child.signal_group(signal.SIGKILL)
                child.wait(5.0)


def run_embedded(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    settings: Settings | None = None,
    worker: bool = True,
    log_level: str = "info",
) -> int:
    """Run the API (and a worker) until Ctrl-C / SIGTERM or until a child dies. Returns an exit code."""
    from app.db.migrate import upgrade
    from app.queue import CeleryJobQueue

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = settings or get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    logger.info("migrating %s", settings.database_url)
    upgrade(settings.database_url)

    env = settings_env(settings)
    children = [Child("api", api_command(host, port, log_level), API_GRACE_SECONDS)]
    if worker:
        children.append(Child("worker", worker_command(log_level), WORKER_GRACE_SECONDS))

    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for child in children:
            child.start(env)
        if worker:
            queue = CeleryJobQueue(settings.broker_url)
            queue.request_reap()  # jobs left running or queued by a previous run
            queue.close()
        logger.info("SEC is up: http://%s:%d/docs (Ctrl-C to stop)", host, port)
        while stop.count == 0:
            dead = [c for c in children if c.poll() is not None]
            if dead:
                exit_code = dead[0].poll() or 1
                logger.error("%s exited with code %s; stopping", dead[0].name, dead[0].poll())
                break
            time.sleep(0.5)
    finally:
        _shutdown(children, stop)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="run the API only")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    sys.exit(
        run_embedded(args.host, args.port, worker=not args.no_worker, log_level=args.log_level)
    )


if __name__ == "__main__":
    main()
