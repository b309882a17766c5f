"""HTTP routes for artifacts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.artifacts import service
from app.artifacts.schemas import ArtifactOut
from app.deps import ArtifactDep, SessionDep, TenantDep, run_and_commit
from app.schemas import ERROR_RESPONSES
from app.state import app_state

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"], responses=ERROR_RESPONSES)


@router.get("/{artifact_id}", response_model=ArtifactOut)
def get_artifact(*, artifact: ArtifactDep) -> ArtifactOut:
    """One artifact record: files, manifest and the archive's sha256."""
    return ArtifactOut.from_row(artifact)


@router.get(
    "/{artifact_id}/download",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}, "description": "The archive"}},
)
async def download_artifact(
    *, artifact_id: str, request: Request, session: SessionDep, tenant: TenantDep
) -> Response:
    """Download the archive; its sha256 is in `X-Checksum-SHA256` and `Content-Digest`."""
    # The store from the app state directly: a dependency for it costs its resolution on
    # every download (FastAPI's dependency solving is a good part of a short request).
    store = app_state(request).store
    return await run_and_commit(session, service.download, tenant.id, artifact_id, store)
