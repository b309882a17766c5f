"""Liveness and readiness probes.

`/healthz` answers as long as the process serves HTTP (no dependencies: a load balancer must
not restart API replicas because the database blips). `/readyz` checks the database and the
broker, so traffic is routed only to replicas that can take a job.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from app.db.session import make_engine
from app.deps import StateDep

router = APIRouter(tags=["health"])
TIMEOUT_S = 2.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(*, state: StateDep) -> JSONResponse:
    """Readiness: the database answers a query and the broker is reachable (503 if not)."""
    checks = {
        "database": _check(lambda: _ping_db(state.engine)),
        "broker": _check(lambda: ping_broker(state.settings.broker_url)),
    }
    down = [name for name, result in checks.items() if result != "ok"]
    if down:
        message = "; ".join(f"{name}: {checks[name]}" for name in down)
        return JSONResponse(
            {"error": {"code": "not_ready", "message": message}, "checks": checks},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "checks": checks})


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as exc:
        return f"unreachable ({type(exc).__name__}: {exc})"[:300]
    return "ok"


def _ping_db(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def ping_broker(url: str) -> None:
    """Reach the Celery broker named by `url` (redis, sqla+<db url>, or any host:port one)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    if scheme.startswith("sqla+"):
        engine = make_engine(url.removeprefix("sqla+"))
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"cannot tell where broker {scheme}:// lives")
    default_ports = {"amqp": 5672, "amqps": 5671}
    port = parts.port or default_ports.get(scheme)
    if port is None:
        raise ValueError(f"no port in broker URL for {scheme}://")
    with socket.create_connection((parts.hostname, port), timeout=TIMEOUT_S):
        pass
