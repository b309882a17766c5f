"""Creating and deleting deployment records."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.artifacts import repository as artifacts_repo
from app.db.models import ArtifactStatus, Deployment, DeploymentStatus
from app.deployments.schemas import DeploymentCreate
from app.errors import Conflict, NotFound


def create_deployment(session: Session, tenant_id: str, body: DeploymentCreate) -> Deployment:
    artifact = artifacts_repo.get(session, tenant_id, body.artifact_id)
    if artifact is None:
        raise NotFound(f"artifact_id: artifact {body.artifact_id!r} not found")
    if artifact.status != ArtifactStatus.READY:
        raise Conflict(
            f"artifact {artifact.id!r} is not ready (status {artifact.status})",
            code="artifact_not_ready",
        )
    config = body.model_dump(exclude={"artifact_id"}, exclude_none=True)
    deployment = Deployment(
        tenant_id=tenant_id,
        artifact_id=artifact.id,
        status=DeploymentStatus.PENDING.value,
        config=config,
    )
    session.add(deployment)
    session.flush()
    return deployment


def delete_deployment(session: Session, deployment: Deployment) -> None:
    session.delete(deployment)
