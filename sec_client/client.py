"""`SecClient`: a typed, synchronous client of the SEC API, built on httpx.

    from sec_client import SecClient

    with SecClient() as sec:                      # SEC_API_URL / SEC_API_KEY from the env
        ds = sec.upload_dataset("reviews.csv")
        plan = sec.plan({"dataset": ds.id, "budget": {"max_minutes": 10}})  # dry run: fits?
        job = sec.submit_job({"base_model": "minilm-l6", "dataset": ds.id})
        job = sec.wait_for_job(job.id, progress_callback=print)
        path = sec.download_artifact(job.artifact_id, "model.tar.gz")   # sha256 checked
        dep = sec.deploy(job.artifact_id)                                # waits until ready
        print(sec.predict(dep.id, ["a gorgeous, witty film"]))

Every error status raises `SecAPIError` with the API's code and message.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import connect_sse
from pydantic import BaseModel

from sec_client.errors import (
    ChecksumMismatch,
    SecAPIError,
    SecConnectionError,
    SecError,
    WaitTimeout,
)
from sec_client.models import (
    Artifact,
    Dataset,
    Deployment,
    EventPage,
    Job,
    JobEvent,
    JobSnapshot,
    JobStatusUpdate,
    Model,
    Page,
    Plan,
    Prediction,
    StreamEnd,
    StreamItem,
    Tenant,
    TraceRow,
)

DEFAULT_URL = "http://127.0.0.1:8000"
M = TypeVar("M", bound=BaseModel)
ProgressCallback = Callable[[JobSnapshot], None]
PredictInput = str | tuple[str, str] | Mapping[str, str]

# How often a dropped event stream is re-opened before `stream` gives up.
STREAM_RECONNECTS = 5


class SecClient:
    """One API key against one SEC server. Pass `http` to reuse a configured `httpx.Client`
    (tests pass FastAPI's `TestClient`, which is one)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("SEC_API_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SEC_API_KEY")
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._headers = {"User-Agent": "sec-client/0.1"}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SecClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise SecConnectionError(f"cannot reach the SEC API at {self.base_url}: {exc}") from exc
        raise_for_error(response)
        return response

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        clean = {k: v for k, v in params.items() if v is not None}
        return model.model_validate(self._request("GET", path, params=clean).json())

    # -- account, models, datasets --------------------------------------------------------

    def me(self) -> Tenant:
        return self._get("/v1/me", Tenant)

    def list_models(self) -> list[Model]:
        return self._get("/v1/models", Page[Model]).data

    def upload_model(self, path: str | Path, *, name: str | None = None) -> Model:
        """Upload an HF-format model archive (.zip / .tar.gz: config, safetensors, tokenizer)."""
        path = Path(path)
        with path.open("rb") as fh:
            response = self._request(
                "POST",
                "/v1/models",
                files={"file": (path.name, fh)},
                data={"name": name} if name else {},
            )
        return Model.model_validate(response.json())

    def upload_dataset(
        self, path: str | Path, *, purpose: str = "labelled", name: str | None = None
    ) -> Dataset:
        """Upload a CSV / JSONL file; the API validates it whole and returns its summary."""
        path = Path(path)
        form = {"purpose": purpose, **({"name": name} if name else {})}
        with path.open("rb") as fh:
            response = self._request(
                "POST", "/v1/datasets", files={"file": (path.name, fh)}, data=form
            )
        return Dataset.model_validate(response.json())

    def list_datasets(self, *, limit: int = 20, cursor: str | None = None) -> Page[Dataset]:
        return self._get("/v1/datasets", Page[Dataset], limit=limit, cursor=cursor)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(f"/v1/datasets/{dataset_id}", Dataset)

    # -- jobs -----------------------------------------------------------------------------

    def submit_job(
        self,
        spec: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        retries: int = 2,
    ) -> Job:
        """Submit a job spec. A connection error is retried with the same Idempotency-Key,
        so a retry never creates a second job."""
        body = _spec_body(spec)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        for attempt in range(retries + 1):
            try:
                response = self._request("POST", "/v1/jobs", json=body, headers=headers)
                return Job.model_validate(response.json())
            except SecConnectionError:
                if attempt == retries:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def plan(
        self,
        spec: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        progress_callback: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Plan:
        """Dry run: what the job would plan on its device (steps, predicted minutes per
        phase, whether it fits the budget), without training or paying for it.

        Submits the spec with `dry_run: true` (with an Idempotency-Key, as `submit_job`),
        waits for that job (a worker loads the model and calibrates: about half a minute) and
        returns its plan. A dry run that fails raises `SecError` with the job's error.
        """
        return Plan.from_job(
            self.dry_run(
                spec,
                idempotency_key=idempotency_key,
                progress_callback=progress_callback,
                timeout=timeout,
            )
        )

    def dry_run(
        self,
        spec: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        progress_callback: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Job:
        """`plan`'s dry-run job itself, succeeded, with the plan as the API holds it under
        `metrics["plan"]` (and `metrics["warnings"]`)."""
        body = {**_spec_body(spec), "dry_run": True}
        job = self.submit_job(body, idempotency_key=idempotency_key)
        job = self.wait_for_job(job.id, progress_callback=progress_callback, timeout=timeout)
        if job.status != "succeeded":
            reason = f"{job.error.code}: {job.error.message}" if job.error else job.status
            raise SecError(f"the dry run {job.id} did not plan: {reason}")
        return job

    def get_job(self, job_id: str) -> Job:
        return self._get(f"/v1/jobs/{job_id}", Job)

    def list_jobs(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> Page[Job]:
        return self._get("/v1/jobs", Page[Job], status=status, limit=limit, cursor=cursor)

    def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> EventPage:
        return self._get(f"/v1/jobs/{job_id}/events", EventPage, after=after, limit=limit)

    def trace(self, job_id: str, *, after_step: int = -1) -> list[TraceRow]:
        """The whole controller trace after `after_step` (follows the pages)."""
        rows: list[TraceRow] = []
        while True:
            body = self._request(
                "GET", f"/v1/jobs/{job_id}/trace", params={"after_step": after_step}
            ).json()
            rows.extend(TraceRow.model_validate(r) for r in body["data"])
            after_step = body["next_cursor"]
            if not body["has_more"]:
                return rows

    def stream(
        self, job_id: str, *, after: int = 0, live: bool = True, trace_after: int = -1
    ) -> Iterator[StreamItem]:
        """Follow a job over server-sent events until it ends (the last item is `StreamEnd`).

        With `live`, `JobStatusUpdate` and `TraceRow` items come along with the `JobEvent`s.
        A dropped connection is re-opened from the last event id and trace step seen.
        """
        reconnects = 0
        while True:
            params: dict[str, Any] = {"after": after}
            if live:
                params.update(live="true", trace_after=trace_after)
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    f"/v1/jobs/{job_id}/events/stream",
                    params=params,
                    headers=dict(self._headers),
                    # (connect, read, write, pool): a plain tuple, which any httpx-compatible
                    # client passed as `http` takes (Starlette's TestClient is httpx2's).
                    timeout=(30.0, 120.0, 30.0, 30.0),
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                        raise_for_error(source.response)
                    for sse in source.iter_sse():
                        if not sse.data:
                            # httpx-sse dispatches an empty message for a keep-alive comment
                            # once an id was seen; the SSE spec says not to. Skip it.
                            continue
                        item = _stream_item(sse.event, sse.json())
                        if isinstance(item, JobEvent):
                            after = item.id
                        elif isinstance(item, TraceRow):
                            trace_after = item.step
                        yield item
                        if isinstance(item, StreamEnd):
                            return
            except httpx.TransportError as exc:
                reconnects += 1
                if reconnects > STREAM_RECONNECTS:
                    raise SecConnectionError(f"event stream of {job_id} lost: {exc}") from exc
                time.sleep(min(2.0**reconnects, 10.0))

    def wait_for_job(
        self,
        job_id: str,
        *,
        progress_callback: ProgressCallback | None = None,
        timeout: float | None = None,
        use_stream: bool = True,
        poll_interval: float = 2.0,
    ) -> Job:
        """Block until the job is succeeded, failed or cancelled, and return it.

        `progress_callback` gets a `JobSnapshot` (status, phase, progress, latest trace step
        and event) on every change. With `use_stream` (default) it follows the live SSE feed,
        else it polls every `poll_interval` seconds. `timeout` raises `WaitTimeout`; with the
        stream it is checked whenever something arrives.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        snapshot = JobSnapshot(job_id=job_id, status="queued")
        items = self.stream(job_id) if use_stream else self._poll(job_id, poll_interval)
        for item in items:
            if isinstance(item, StreamEnd):
                break
            snapshot = _advance(snapshot, item)
            if progress_callback is not None:
                progress_callback(snapshot)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} is still {snapshot.status} after {timeout} s")
        return self.get_job(job_id)

    def _poll(self, job_id: str, interval: float) -> Iterator[StreamItem]:
        """The stream's items, by polling (for proxies that buffer server-sent events)."""
        after, after_step = 0, -1
        last: JobStatusUpdate | None = None
        while True:
            job = self.get_job(job_id)
            update = JobStatusUpdate(status=job.status, phase=job.phase, progress=job.progress)
            if update != last:
                yield update
                last = update
            for row in self.trace(job_id, after_step=after_step):
                after_step = row.step
                yield row
            while True:
                page = self.events(job_id, after=after)
                yield from page.data
                after = page.next_cursor
                if not page.has_more:
                    break
            if job.done:
                yield StreamEnd(status=job.status)
                return
            time.sleep(interval)

    # -- artifacts ------------------------------------------------------------------------

    def job_artifacts(self, job_id: str) -> list[Artifact]:
        body = self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()
        return [Artifact.model_validate(a) for a in body["data"]]

    def get_artifact(self, artifact_id: str) -> Artifact:
        return self._get(f"/v1/artifacts/{artifact_id}", Artifact)

    def download_artifact(self, artifact_id: str, dest: str | Path = ".") -> Path:
        """Download the archive to `dest` (a file, or a folder for `<artifact id>.tar.gz`).

        The sha256 of the bytes must equal both `X-Checksum-SHA256` and the artifact record;
        otherwise the partial file is removed and `ChecksumMismatch` is raised.
        """
        record = self.get_artifact(artifact_id)
        dest = Path(dest)
        target = dest / f"{artifact_id}.tar.gz" if dest.is_dir() else dest
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        try:
            with self._http.stream(
                "GET", f"/v1/artifacts/{artifact_id}/download", headers=self._headers
            ) as response:
                if response.is_error:
                    response.read()
                    raise_for_error(response)
                announced = response.headers.get("X-Checksum-SHA256")
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                        digest.update(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise SecConnectionError(f"download of {artifact_id} failed: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        got = digest.hexdigest()
        if got != announced or got != record.sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"sha256 of the download is {got}; the server announced {announced} and the"
                f" record says {record.sha256}"
            )
        partial.replace(target)
        return target

    # -- deployments and inference --------------------------------------------------------

    def deploy(
        self,
        artifact_id: str,
        *,
        max_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        wait: bool = True,
        timeout: float = 300.0,
        idempotency_key: str | None = None,
    ) -> Deployment:
        """Deploy an artifact. With `wait`, return once it is `ready`; a deployment that
        fails to load raises `SecError` with the server's reason."""
        body: dict[str, Any] = {"artifact_id": artifact_id}
        if max_batch_size is not None:
            body["max_batch_size"] = max_batch_size
        if max_wait_ms is not None:
            body["max_wait_ms"] = max_wait_ms
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        response = self._request("POST", "/v1/deployments", json=body, headers=headers)
        deployment = Deployment.model_validate(response.json())
        return self.wait_for_deployment(deployment.id, timeout=timeout) if wait else deployment

    def wait_for_deployment(self, deployment_id: str, *, timeout: float = 300.0) -> Deployment:
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.get_deployment(deployment_id)
            if deployment.status == "ready":
                return deployment
            if deployment.status == "failed":
                raise SecError(
                    f"deployment {deployment_id} failed: {deployment.error_message or 'no reason given'}"
                )
            if time.monotonic() > deadline:
                raise WaitTimeout(f"deployment {deployment_id} not ready after {timeout} s")
            time.sleep(0.5)

    def get_deployment(self, deployment_id: str) -> Deployment:
        return self._get(f"/v1/deployments/{deployment_id}", Deployment)

    def list_deployments(self, *, limit: int = 20) -> Page[Deployment]:
        return self._get("/v1/deployments", Page[Deployment], limit=limit)

    def delete_deployment(self, deployment_id: str) -> None:
        self._request("DELETE", f"/v1/deployments/{deployment_id}")

    def predict(self, deployment_id: str, inputs: Sequence[PredictInput]) -> list[Prediction]:
        """Labels and probabilities for texts, or (text, text_pair) pairs, in input order."""
        payload = [_predict_input(x) for x in inputs]
        response = self._request(
            "POST", f"/v1/deployments/{deployment_id}/predict", json={"inputs": payload}
        )
        return [Prediction.model_validate(p) for p in response.json()["predictions"]]


def raise_for_error(response: httpx.Response) -> None:
    """Raise `SecAPIError` with the API's `{"error": {"code", "message"}}` for 4xx / 5xx."""
    if not response.is_error:
        return
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        error = response.json().get("error") or {}
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
    except (ValueError, AttributeError):
        text = response.text.strip()
        if text:
            message = text[:500]
    retry_after = response.headers.get("Retry-After")
    raise SecAPIError(
        response.status_code,
        code,
        message,
        request_id=response.headers.get("X-Request-ID"),
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def _spec_body(spec: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json", exclude_unset=True)
    return dict(spec)


def _stream_item(event: str, data: Any) -> StreamItem:
    if event == "end":
        return StreamEnd.model_validate(data)
    if event == "status":
        return JobStatusUpdate.model_validate(data)
    if event == "trace":
        return TraceRow.model_validate(data)
    return JobEvent.model_validate(data)


def _advance(snapshot: JobSnapshot, item: StreamItem) -> JobSnapshot:
    if isinstance(item, JobStatusUpdate):
        changes: dict[str, Any] = item.model_dump()
    elif isinstance(item, TraceRow):
        changes = {"trace": item}
    elif isinstance(item, JobEvent):
        changes = {"event": item}
    else:
        changes = {}
    return snapshot.model_copy(update=changes)


def _predict_input(value: PredictInput) -> str | dict[str, str]:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        text, text_pair = value
        return {"text": text, "text_pair": text_pair}
    return dict(value)
