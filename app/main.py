"""The FastAPI application factory.

Run with `uvicorn --factory app.main:create_app` (or `sec serve`). There is deliberately no
module-level `app`: importing this module builds nothing and connects to nothing, and tests
build as many apps as they like, each with its own `Settings` and job queue.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.artifacts.router import router as artifacts_router
from app.dashboard import mount_dashboard
from app.datasets.router import router as datasets_router
from app.db.session import make_engine, make_sessionmaker
from app.deployments.router import router as deployments_router
from app.deployments.service import DbDeploymentSource
from app.docs import mount_docs
from app.errors import AppError, BodyLimitJSONMiddleware, echo
from app.health import router as health_router
from app.jobs.router import router as jobs_router
from app.logging import RequestLogMiddleware, configure_logging, log_level
from app.metrics import MetricsMiddleware
from app.metrics import router as metrics_router
from app.models.router import router as models_router
from app.queue import CeleryJobQueue, JobQueue
from app.ratelimit import TenantRateLimiter
from app.serving.manager import ServingManager
from app.settings import Settings, get_settings
from app.state import AppState
from app.storage import StoreUnavailable, store_from_settings
from app.tenants.auth import Authenticator
from app.tenants.router import router as tenants_router
from app.ttlcache import TTLCache
from app.warmup import cache_redis_lib_version, warm_up

log = structlog.get_logger("sec.api")

# Side transactions (key stamps, Idempotency-Key claims of the upload routes): few and short.
SIDE_POOL_SIZE, SIDE_MAX_OVERFLOW = 2, 8

# Multipart overhead on top of the file itself (boundaries, part headers, the name field).
MULTIPART_SLACK = 64 * 1024

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def create_app(settings: Settings | None = None, job_queue: JobQueue | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    cache_redis_lib_version()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The request pool keeps every connection it may use open (no overflow): a burst
        # then finds them connected, instead of opening (and, past the pool size, closing
        # again) a Postgres connection per request. `db_slots` admits this many requests.
        # Last in, first out: a light load keeps reusing the same few warm connections (and
        # Postgres backends) instead of cycling through all of them.
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_use_lifo=True,
        )
        side_engine = make_engine(
            settings.database_url, pool_size=SIDE_POOL_SIZE, max_overflow=SIDE_MAX_OVERFLOW
        )
        sessions = make_sessionmaker(engine)
        side_sessions = make_sessionmaker(side_engine)
        store = store_from_settings(settings)
        queue = job_queue or CeleryJobQueue(settings.broker_url)
        app.state.sec = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessions,
            store=store,
            job_queue=queue,
            side_sessionmaker=side_sessions,
            db_slots=asyncio.Semaphore(settings.db_pool_size),
            auth=Authenticator(sessions, side_sessions, ttl_s=settings.auth_cache_seconds),
        )
        await run_in_threadpool(warm_up, sessions, settings.db_pool_size, queue)
        # Hosted inference: loaded models, micro-batchers and their thread pools.
        serving = ServingManager(settings, store, DbDeploymentSource(sessions, settings))
        await serving.start()
        app.state.serving = serving
        # What start-up built (modules, routes, pools, compiled statements) lives as long as
        # the process: move it out of the cyclic collector's generations, so a full
        # collection while serving scans only what requests allocated, not the whole start-up
        # heap (a pause that lands on the requests in flight, i.e. on p99).
        gc.collect()
        gc.freeze()
        log.info("api_started", environment=settings.environment)
        try:
            yield
        finally:
            await serving.close()
            engine.dispose()
            side_engine.dispose()
            log.info("api_stopped")

    app = FastAPI(
        title="SEC: compression as a service",
        version="0.1.0",
        description=(
            "Compress a transformer classifier with the SEC method (data optimisation +"
            " model compression under a Synergy Controller). Authenticate with"
            " `Authorization: Bearer <api key>`."
        ),
        lifespan=lifespan,
        # Served by app/docs.py with their assets, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # Per-tenant request counters (app/ratelimit.py), read by the tenant dependency.
    app.state.rate_limiter = TenantRateLimiter.from_settings(settings)
    # Ready deployments' records for predict, (tenant id, deployment id) -> view, kept as long
    # as the key cache's entries (app/deployments/router.py).
    app.state.deployment_views = TTLCache(settings.auth_cache_seconds)
    # Body limits are set per router (uploads get theirs, JSON routes a small one) rather than
    # app-wide: an app-wide limit answers from outside our middleware, in plain text.
    app.add_middleware(BodyLimitJSONMiddleware)
    app.add_middleware(RequestLogMiddleware, log_requests=log_level(settings) <= logging.INFO)
    app.add_middleware(MetricsMiddleware)
    _add_exception_handlers(app)

    json_limit = settings.max_json_body_bytes
    # Routes are matched in order, one pattern at a time, so the hot ones go first: the
    # predict route, then job status and events, then downloads. The prefixes do not overlap,
    # so the order changes nothing else.
    app.include_router(deployments_router, max_body_size=json_limit)
    app.include_router(jobs_router, max_body_size=json_limit)
    app.include_router(artifacts_router, max_body_size=json_limit)
    app.include_router(health_router, max_body_size=json_limit)
    app.include_router(tenants_router, max_body_size=json_limit)
    app.include_router(datasets_router, max_body_size=settings.max_upload_bytes + MULTIPART_SLACK)
    app.include_router(
        models_router, max_body_size=settings.max_model_archive_bytes + MULTIPART_SLACK
    )
    app.include_router(metrics_router, max_body_size=json_limit)
    mount_dashboard(app)
    mount_docs(app)
    return app


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        # Nothing was recorded (an upload's row is only written once its blob is stored):
        # the client may simply send the request again.
        log.warning("store_unavailable", error=str(exc))
        message = "the blob store is unavailable; nothing was changed, try again shortly"
        return JSONResponse(
            {"error": {"code": "store_unavailable", "message": message}},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [_clean_error(e) for e in exc.errors()]
        message = "; ".join(_describe(e) for e in detail[:5]) or "invalid request"
        if len(detail) > 5:
            message += f"; and {len(detail) - 5} more"
        body = {"error": {"code": "validation_error", "message": message, "detail": detail}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal server error"}},
            status_code=500,
        )


def _clean_error(error: Any) -> dict[str, Any]:
    """Pydantic's error without `input` and `ctx`: they may echo user data (dataset text,
    keys) and may hold exception objects that are not JSON. The location's names come from
    the client too (an unknown field's name): cut like any echoed value (app/errors.py)."""
    loc = [echo(p) if isinstance(p, str) else p for p in error.get("loc", ())]
    return {"type": error.get("type"), "loc": loc, "msg": error.get("msg")}


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] in ("body", "query", "path", "header", "form"):
        where, loc = loc[0], loc[1:]
    else:
        where = "request"
    field = ".".join(loc) or where
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {msg}"
