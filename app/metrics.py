"""Prometheus metrics: `GET /metrics` in the text exposition format.

- `sec_http_request_duration_seconds{method, route, status}`: every request, labelled by the
  route *template* (`/v1/jobs/{job_id}`), never the raw path, so ids cannot blow up the
  number of series. Server-sent-event streams are counted when they end.
- `sec_inference_duration_seconds{outcome}`: hosted inference, from the moment a predict
  request is queued for its micro-batch until its answer is back (queue wait + model).
- `sec_inference_batch_rows`: inputs per micro-batch handed to a model; `_sum / _count` is
  the mean batch size (the serving bench reads it).
- `sec_inference_batch_size{deployment}`: the largest micro-batch of each deployment loaded in
  this process, picked at load time from the model's measured curve (removed on unload).
- `sec_jobs{status}`: jobs by state, counted in the database at scrape time (the database is
  the source of truth, so every API replica reports the same numbers).
- `sec_broker_queue_depth{queue}`: messages waiting on each Celery queue, asked of the broker
  at scrape time; `sec_broker_up` is 0 when the broker could not be reached.

The histograms live in the process-wide default registry (one API process per container);
the scrape-time gauges are built fresh on each scrape from this app's own database and
broker, so tests that build many apps never share them. The endpoint carries no tenant data
(only totals), but it does show traffic and load: with `SEC_METRICS_TOKEN` set it answers only
`Authorization: Bearer <token>` (Prometheus' `authorization` scrape option), 401 otherwise.
Unset, it is open to whoever reaches the API port: keep that port on the internal network.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db.models import Job, JobStatus
from app.errors import Unauthorized
from app.queue import QueueName
from app.state import AppState, app_state

log = structlog.get_logger("sec.metrics")

REQUEST_LATENCY = Histogram(
    "sec_http_request_duration_seconds",
    "HTTP request latency by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INFERENCE_LATENCY = Histogram(
    "sec_inference_duration_seconds",
    "Hosted inference latency per predict request (micro-batch wait + model run).",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INFERENCE_BATCH_ROWS = Histogram(
    "sec_inference_batch_rows",
    "Inputs per micro-batch handed to a model (all deployments of the process).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
INFERENCE_BATCH_SIZE = Gauge(
    "sec_inference_batch_size",
    "Largest micro-batch of each deployment loaded in this process (picked from its curve).",
    ["deployment"],
)
BROKER_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format); `Authorization: Bearer <SEC_METRICS_TOKEN>`
    when the deployment sets one."""
    # `app_state` rather than `StateDep`: app.deps imports the domains, and the deployments
    # service imports this module for INFERENCE_LATENCY.
    state = app_state(request)
    _check_token(state, request.headers.get("authorization"))
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_ScrapeCollector(state))
    return Response(render(REGISTRY) + render(scrape), media_type=CONTENT_TYPE_LATEST)


def _check_token(state: AppState, authorization: str | None) -> None:
    token = state.settings.metrics_token
    if token is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    # compare_digest: the time taken says nothing about how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise Unauthorized("/metrics needs Authorization: Bearer <the SEC_METRICS_TOKEN>")


class _ScrapeCollector(Collector):
    """Jobs by state (database) and queue depth (broker), read when Prometheus scrapes."""

    def __init__(self, state: AppState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("sec_jobs", "Jobs by status (all tenants).", labels=["status"])
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        with self._state.sessionmaker() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts.update({str(status): int(n) for status, n in rows})
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], n)
        yield jobs

        depth = GaugeMetricFamily(
            "sec_broker_queue_depth", "Messages waiting on each Celery queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("sec_broker_up", "1 if the broker answered this scrape.")
        try:
            for queue, n in broker_queue_depths(self._state.settings.broker_url):
                depth.add_metric([queue], n)
            up.add_metric([], 1)
        except Exception as exc:  # a down broker must not break the whole scrape
            log.warning("metrics_broker_unreachable", error=f"{type(exc).__name__}: {exc}")
            up.add_metric([], 0)
        yield depth
        yield up


def broker_queue_depths(broker_url: str) -> list[tuple[str, int]]:
    """(queue, waiting messages) for our Celery queues, by a passive declare."""
    from kombu.connection import Connection
    from kombu.exceptions import ChannelError

    out: list[tuple[str, int]] = []
    with Connection(broker_url, connect_timeout=BROKER_TIMEOUT_S) as conn:  # type: ignore[no-untyped-call]
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
        channel = conn.default_channel
        for queue in QueueName:
            try:
                out.append((queue.value, int(channel.queue_declare(queue.value, passive=True)[1])))
            except ChannelError:  # never declared: nothing was ever sent to it
                out.append((queue.value, 0))
    return out


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request (streams too, without buffering them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The template, not the path; requests that matched no route share one label.
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_LATENCY.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )
