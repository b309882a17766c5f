"""Deployments: creating and deleting records (with warm-up and unload hooked to the commit),
checking prediction inputs against the limits, and mapping serving errors to HTTP errors."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import repository as artifacts_repo
from app.db.hooks import on_commit
from app.db.models import ArtifactStatus, Deployment, DeploymentStatus
from app.db.session import unit_of_work
from app.deployments import repository as repo
from app.deployments.schemas import DeploymentCreate, PairInput, PredictRequest
from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, TooManyRequests
from app.metrics import INFERENCE_LATENCY
from app.serving.artifact import ArtifactRef
from app.serving.encoder import TextInput
from app.serving.errors import BatcherClosed, DeploymentGone, ModelLoadError, QueueFull
from app.serving.manager import LoadSpec, ServingManager
from app.serving.model import Prediction
from app.settings import Settings
from app.tenants.auth import Authenticator, Principal

# At most this many problems are listed in one 422 message.
_MAX_PROBLEMS = 5


@dataclass(frozen=True)
class DeploymentView:
    """The few fields predict needs, read in a short transaction so that no database
    connection is held while the request waits for its batch."""

    id: str
    status: str
    error_message: str | None


def create_deployment(
    session: Session,
    tenant_id: str,
    body: DeploymentCreate,
    settings: Settings,
    serving: ServingManager,
) -> Deployment:
    artifact = artifacts_repo.get(session, tenant_id, body.artifact_id)
    if artifact is None:
        raise NotFound(f"artifact_id: artifact {body.artifact_id!r} not found")
    if artifact.status != ArtifactStatus.READY:
        raise Conflict(
            f"artifact {artifact.id!r} is not ready (status {artifact.status})",
            code="artifact_not_ready",
        )
    # The effective values are stored, so a deployment keeps its behaviour when the server's
    # defaults change, and GET shows what it runs with.
    config = {
        "max_batch_size": body.max_batch_size or settings.inference_max_batch_size,
        "max_wait_ms": (
            body.max_wait_ms if body.max_wait_ms is not None else settings.inference_max_wait_ms
        ),
    }
    deployment = Deployment(
        tenant_id=tenant_id,
        artifact_id=artifact.id,
        status=DeploymentStatus.PENDING.value,
        config=config,
    )
    session.add(deployment)
    session.flush()
    deployment_id = deployment.id
    # After the commit: the warm-up reads the row from its own session.
    on_commit(session, lambda: serving.schedule_warm_up(deployment_id))
    return deployment


def delete_deployment(session: Session, deployment: Deployment, serving: ServingManager) -> None:
    session.delete(deployment)
    deployment_id = deployment.id
    on_commit(session, lambda: serving.unload_blocking(deployment_id))


def view(
    factory: sessionmaker[Session],
    auth: Authenticator,
    key_hash: str,
    principal: Principal | None,
    deployment_id: str,
) -> tuple[Principal, DeploymentView]:
    """Authenticate the key (unless `principal` is already known) and read the tenant's
    deployment (or 404), in one short transaction."""
    with unit_of_work(factory) as session:
        if principal is None:
            principal = auth.resolve(session, key_hash)
        deployment = repo.get(session, principal.tenant.id, deployment_id)
        if deployment is None:
            raise NotFound(f"deployment {deployment_id!r} not found")
        return principal, DeploymentView(deployment.id, deployment.status, deployment.error_message)


def check_inputs(body: PredictRequest, settings: Settings) -> list[TextInput]:
    """413 beyond the number of inputs; 422 naming each empty or too long text."""
    n = len(body.inputs)
    if n > settings.inference_max_inputs:
        raise PayloadTooLarge(
            f"{n} inputs in one request; the limit is {settings.inference_max_inputs}:"
            " split them over several requests",
            code="too_many_inputs",
        )
    limit = settings.inference_max_text_chars
    problems: list[str] = []
    inputs: list[TextInput] = []
    for i, item in enumerate(body.inputs):
        fields = (
            [("text", item.text), ("text_pair", item.text_pair)]
            if isinstance(item, PairInput)
            else [("", item)]
        )
        for name, text in fields:
            where = f"inputs[{i}]" + (f".{name}" if name else "")
            if not text.strip():
                problems.append(f"{where} is empty")
            elif len(text) > limit:
                problems.append(f"{where} has {len(text)} characters; the limit is {limit}")
        inputs.append((item.text, item.text_pair) if isinstance(item, PairInput) else item)
    if problems:
        more = len(problems) - _MAX_PROBLEMS
        message = "; ".join(problems[:_MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise InvalidInput(message, code="invalid_inputs")
    return inputs


def require_ready(deployment: DeploymentView) -> None:
    if deployment.status == DeploymentStatus.READY:
        return
    if deployment.status == DeploymentStatus.FAILED:
        raise Conflict(
            f"deployment {deployment.id!r} failed to start: {deployment.error_message}",
            code="deployment_failed",
        )
    raise Conflict(
        f"deployment {deployment.id!r} is still warming up (status {deployment.status});"
        " poll GET /v1/deployments/{id} until its status is ready",
        code="deployment_not_ready",
    )


async def predict(
    serving: ServingManager, deployment: DeploymentView, inputs: list[TextInput]
) -> list[Prediction]:
    started = time.perf_counter()
    outcome = "error"
    try:
        predictions = await serving.predict(deployment.id, inputs)
        outcome = "ok"
        return predictions
    except QueueFull as exc:
        raise TooManyRequests(
            str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after_s)}
        ) from exc
    except ModelLoadError as exc:
        # A lazy reload (other replica, restart, eviction) found the artifact unusable.
        await serving.record_failure(deployment.id, str(exc))
        raise Conflict(
            f"deployment {deployment.id!r} cannot be served: {exc}", code="deployment_failed"
        ) from exc
    except DeploymentGone as exc:
        raise NotFound(f"deployment {deployment.id!r} not found") from exc
    except BatcherClosed as exc:
        raise TooManyRequests(
            f"deployment {deployment.id!r} is being unloaded; retry",
            code="deployment_unloading",
            headers={"Retry-After": "1"},
        ) from exc
    finally:
        INFERENCE_LATENCY.labels(outcome).observe(time.perf_counter() - started)


class DbDeploymentSource:
    """The serving manager's view of the database (blocking; called from its loading pool)."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def load_spec(self, deployment_id: str) -> LoadSpec | None:
        with unit_of_work(self.factory) as session:
            found = repo.with_artifact(session, deployment_id)
            if found is None:
                return None
            deployment, artifact = found
            config = deployment.config or {}
            return LoadSpec(
                deployment_id=deployment.id,
                artifact=ArtifactRef.from_record(
                    artifact_id=artifact.id,
                    storage_key=artifact.storage_key,
                    sha256=artifact.sha256 or "",
                    manifest=artifact.manifest or {},
                ),
                max_batch_size=int(
                    config.get("max_batch_size", self.settings.inference_max_batch_size)
                ),
                max_wait_ms=float(config.get("max_wait_ms", self.settings.inference_max_wait_ms)),
            )

    def mark_ready(self, deployment_id: str) -> bool:
        with unit_of_work(self.factory) as session:
            return repo.transition(
                session, deployment_id, from_=[DeploymentStatus.PENDING], to=DeploymentStatus.READY
            )

    def mark_failed(self, deployment_id: str, message: str) -> bool:
        with unit_of_work(self.factory) as session:
            return repo.transition(
                session,
                deployment_id,
                from_=[DeploymentStatus.PENDING, DeploymentStatus.READY],
                to=DeploymentStatus.FAILED,
                error_message=message,
            )
