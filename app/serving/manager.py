"""The serving manager: one per API process, built in the app's lifespan.

It owns the loaded models (an LRU), one micro-batcher per loaded deployment, and two thread
pools: one for loading (hashing, extraction, session creation: seconds) and one for
inference (one batch per model at a time, so no more threads than cached models). All of its
state lives on the event loop; blocking work always goes to a pool.

A deployment is loaded by its warm-up (after `POST /v1/deployments` commits), or lazily by
the first predict in a process that does not hold it: another API replica, a restart, or
after an LRU eviction. Both paths share one in-flight load per deployment.

The manager does not know the database: the deployments package gives it a `DeploymentSource`
(what to load, where to record the outcome), called from the loading pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from app.metrics import INFERENCE_BATCH_ROWS, INFERENCE_BATCH_SIZE
from app.serving.artifact import ArtifactRef, prepare_artifact
from app.serving.batch_size import PROBE_TEXT, measure_curve, pick_batch_size
from app.serving.batcher import MicroBatcher
from app.serving.cache import LRUCache
from app.serving.encoder import TextInput
from app.serving.errors import BatcherClosed, DeploymentGone, ModelLoadError
from app.serving.model import LoadedModel, Prediction, load_model
from app.settings import Settings
from app.storage import BlobStore

log = structlog.get_logger("sec.serving")

# How long a request thread waits for an unload it asked for (DELETE) before answering.
_UNLOAD_WAIT_S = 30.0


@dataclass(frozen=True)
class LoadSpec:
    deployment_id: str
    artifact: ArtifactRef
    max_batch_size: int
    max_wait_ms: float


class DeploymentSource(Protocol):
    """Blocking database access, called from the loading pool."""

    def load_spec(self, deployment_id: str) -> LoadSpec | None:
        """What to load; None when the deployment no longer exists."""
        ...

    def mark_ready(self, deployment_id: str) -> bool:
        """pending -> ready; False when the deployment is gone (or not pending)."""
        ...

    def mark_failed(self, deployment_id: str, message: str) -> bool: ...


@dataclass
class Deployed:
    model: LoadedModel
    batcher: MicroBatcher[TextInput, Prediction]

    @property
    def nbytes(self) -> int:
        return self.model.nbytes


class ServingManager:
    def __init__(self, settings: Settings, store: BlobStore, source: DeploymentSource) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.cache: LRUCache[Deployed] = LRUCache(
            max_items=settings.inference_cache_models,
            max_bytes=int(settings.inference_cache_memory_mb * 1024 * 1024),
        )
        self._loading: dict[str, asyncio.Task[Deployed]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sec-load")
        self._infer_pool = ThreadPoolExecutor(
            max_workers=settings.inference_cache_models, thread_name_prefix="sec-infer"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Fail what is queued, stop the workers, wait for the pools."""
        pending = list(self._loading.values()) + list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for _, deployed in self.cache.clear():
            await deployed.batcher.close(drain=False)
        self._load_pool.shutdown(wait=True, cancel_futures=True)
        self._infer_pool.shutdown(wait=True, cancel_futures=True)

    # -- called from request threads -----------------------------------------------------------

    def schedule_warm_up(self, deployment_id: str) -> None:
        """Start loading a just-committed deployment; returns at once."""
        self._submit(self.warm_up(deployment_id))

    def unload_blocking(self, deployment_id: str) -> None:
        """Unload (from a request thread) and wait for it, so DELETE answers after it."""
        future = self._submit(self.unload(deployment_id))
        if _on_loop_thread(self._loop):
            return  # cannot wait for the loop from the loop itself; it runs next
        try:
            future.result(timeout=_UNLOAD_WAIT_S)
        except concurrent.futures.TimeoutError:
            log.warning("unload_slow", deployment_id=deployment_id)
        except concurrent.futures.CancelledError:
            pass

    def _submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run `coro` as a task on the manager's loop, from any thread; a future of its end."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            done.cancel()
            return done

        def finished(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                done.cancel()
            elif (exc := task.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(None)

        def spawn() -> None:
            self._spawn(coro).add_done_callback(finished)

        if _on_loop_thread(loop):
            spawn()
        else:
            loop.call_soon_threadsafe(spawn)
        return done

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task the manager keeps a reference to (the loop keeps only weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- on the event loop ---------------------------------------------------------------------

    async def warm_up(self, deployment_id: str) -> None:
        """Load the deployment and record ready / failed."""
        loop = asyncio.get_running_loop()
        try:
            await self.ensure_loaded(deployment_id)
        except DeploymentGone:
            return
        except ModelLoadError as exc:
            log.warning("deployment_failed", deployment_id=deployment_id, reason=str(exc))
            await self.record_failure(deployment_id, str(exc))
            return
        except Exception as exc:
            log.error("deployment_load_error", deployment_id=deployment_id, exc_info=exc)
            await self.record_failure(
                deployment_id,
                "internal error while loading the model; the operators have the details",
            )
            return
        if not await loop.run_in_executor(self._load_pool, self.source.mark_ready, deployment_id):
            # Deleted (or otherwise settled) while it loaded: do not keep it around.
            await self.unload(deployment_id)
        else:
            log.info("deployment_ready", deployment_id=deployment_id)

    async def record_failure(self, deployment_id: str, message: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_pool, self.source.mark_failed, deployment_id, message)

    async def ensure_loaded(self, deployment_id: str) -> Deployed:
        deployed = self.cache.get(deployment_id)
        if deployed is not None:
            return deployed
        task = self._loading.get(deployment_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(deployment_id))
            self._loading[deployment_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(deployment_id, None))
        # shield: a caller that goes away must not cancel the load other callers wait for.
        return await asyncio.shield(task)

    async def _load(self, deployment_id: str) -> Deployed:
        loop = asyncio.get_running_loop()
        spec, model = await loop.run_in_executor(
            self._load_pool, self._load_blocking, deployment_id
        )

        def run_batch(values: list[TextInput]) -> asyncio.Future[list[Prediction]]:
            INFERENCE_BATCH_ROWS.observe(len(values))
            return loop.run_in_executor(self._infer_pool, model.predict, values)

        batcher: MicroBatcher[TextInput, Prediction] = MicroBatcher(
            run_batch,
            max_batch_size=model.max_rows,
            max_wait_s=spec.max_wait_ms / 1000.0,
            max_queue=self.settings.inference_queue_size,
            name=deployment_id,
        )
        batcher.start()
        deployed = Deployed(model, batcher)
        INFERENCE_BATCH_SIZE.labels(deployment_id).set(model.max_rows)
        for evicted_id, evicted in self.cache.put(deployment_id, deployed):
            log.info("model_evicted", deployment_id=evicted_id)
            _forget_metrics(evicted_id)
            self._spawn(evicted.batcher.close(drain=True))
        log.info("model_loaded", deployment_id=deployment_id, approx_mb=deployed.nbytes >> 20)
        return deployed

    def _load_blocking(self, deployment_id: str) -> tuple[LoadSpec, LoadedModel]:
        spec = self.source.load_spec(deployment_id)
        if spec is None:
            raise DeploymentGone(deployment_id)
        directory = prepare_artifact(
            spec.artifact,
            self.store,
            self.settings.serving_dir,
            max_entries=self.settings.max_archive_entries,
            max_ratio=self.settings.max_archive_ratio,
        )
        model = load_model(
            directory,
            spec.artifact.manifest,
            threads=self.settings.inference_threads,
            max_tokens=self.settings.inference_max_batch_tokens,
        )
        model.max_rows = self._batch_size(spec, model)
        return spec, model

    def _batch_size(self, spec: LoadSpec, model: LoadedModel) -> int:
        """The deployment's `max_batch_size`, or less where the model's own curve, measured
        here, shows that bigger batches buy nothing (app/serving/batch_size.py)."""
        if spec.max_batch_size == 1 or not self.settings.inference_auto_batch_size:
            return spec.max_batch_size
        curve = measure_curve(
            lambda size: model.probabilities([PROBE_TEXT] * size), spec.max_batch_size
        )
        picked = pick_batch_size(curve)
        log.info(
            "batch_size_picked",
            deployment_id=spec.deployment_id,
            batch_size=picked,
            ms_per_input={size: round(1000 * t, 3) for size, t in curve.items()},
        )
        return picked

    async def unload(self, deployment_id: str) -> None:
        deployed = self.cache.pop(deployment_id)
        if deployed is not None:
            _forget_metrics(deployment_id)
            await deployed.batcher.close(drain=False)
            log.info("model_unloaded", deployment_id=deployment_id)

    async def predict(self, deployment_id: str, inputs: Sequence[TextInput]) -> list[Prediction]:
        """Predictions in input order. Raises QueueFull, ModelLoadError, DeploymentGone."""
        for _ in range(2):
            deployed = await self.ensure_loaded(deployment_id)
            try:
                futures = deployed.batcher.submit(inputs)
            except BatcherClosed:
                continue  # evicted between the lookup and the submit: load it again
            return list(await asyncio.gather(*futures))
        raise BatcherClosed(f"deployment {deployment_id} was unloaded while queueing")

    def is_loaded(self, deployment_id: str) -> bool:
        return deployment_id in self.cache

    def resume_warm_up(self, deployment_id: str) -> None:
        """For a deployment still `pending` that this process is not loading: its warm-up
        may have died with another process (restart, crash), so run one here. Harmless if
        another process finishes first: marking ready is conditional."""
        if deployment_id not in self._loading and deployment_id not in self.cache:
            self.schedule_warm_up(deployment_id)


def _forget_metrics(deployment_id: str) -> None:
    with contextlib.suppress(KeyError):  # never set (a failed load) or already removed
        INFERENCE_BATCH_SIZE.remove(deployment_id)


def _on_loop_thread(loop: asyncio.AbstractEventLoop | None) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
