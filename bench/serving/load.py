"""Load generation for the serving bench: what one closed-loop scenario measured (`LoadResult`),
and the Python fallback generator used when `wrk` is not installed (bench/serving/wrk.py is
the default: it costs the shared CPU far less per request).

The fallback runs N async clients, one httpx client and keep-alive connection each, each
sending its next request as soon as its previous one is answered, for a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class LoadResult:
    requests: int  # every answer, whatever its status
    non_2xx: int
    socket_errors: int
    duration_s: float
    latency_ms: dict[str, float]  # mean, p50, p90, p95, p99, max
    client_cpu_s: float  # what the load generator itself spent

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx - self.socket_errors

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    values = np.array(latencies_ms) if latencies_ms else np.array([np.nan])
    return {
        "mean": round(float(np.mean(values)), 3),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "max": round(float(np.max(values)), 3),
    }


async def _run(
    url: str, api_key: str, bodies: list[dict[str, Any]], clients: int, seconds: float
) -> tuple[int, int, int, float, list[float]]:
    headers = {"Authorization": f"Bearer {api_key}"}
    latencies: list[float] = []
    counts = {"requests": 0, "non_2xx": 0, "errors": 0}
    sent = 0

    def new_client() -> httpx.AsyncClient:
        # One client (one keep-alive connection) per simulated user: a single AsyncClient
        # shared by 64 tasks spends more CPU in its connection pool than the server spends
        # answering. verify=False: plain HTTP on loopback, so no CA bundle is loaded.
        return httpx.AsyncClient(
            headers=headers,
            timeout=120.0,
            verify=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def one_client(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal sent
        async with client:
            while time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                started = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                counts["requests"] += 1
                if not 200 <= r.status_code < 300:
                    counts["non_2xx"] += 1

    pool = [new_client() for _ in range(clients)]  # built before the clock starts
    started = time.perf_counter()
    await asyncio.gather(*(one_client(c, started + seconds) for c in pool))
    duration = time.perf_counter() - started
    return counts["requests"], counts["non_2xx"], counts["errors"], duration, latencies


def run_python(
    url: str, path: str, api_key: str, bodies: list[dict[str, Any]], *, clients: int, seconds: float
) -> LoadResult:
    cpu = time.process_time()
    requests, non_2xx, errors, duration, latencies = asyncio.run(
        _run(url + path, api_key, bodies, clients, seconds)
    )
    return LoadResult(
        requests=requests + errors,
        non_2xx=non_2xx,
        socket_errors=errors,
        duration_s=duration,
        latency_ms=percentiles(latencies),
        client_cpu_s=time.process_time() - cpu,
    )
