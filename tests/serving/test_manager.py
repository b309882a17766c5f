"""The serving manager with a fake database side: one shared load per deployment, outcomes
recorded, a deployment deleted during its warm-up is not kept loaded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.serving.artifact import ArtifactRef
from app.serving.errors import DeploymentGone
from app.serving.manager import LoadSpec, ServingManager
from app.settings import Settings
from app.storage import LocalBlobStore
from tests.serving.conftest import stored_ref
from tests.serving.tiny_artifact import TinyArtifact

pytestmark = pytest.mark.unit


@dataclass
class FakeSource:
    ref: ArtifactRef | None
    ready_ok: bool = True
    loads: int = 0
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def load_spec(self, deployment_id: str) -> LoadSpec | None:
        self.loads += 1
        if self.ref is None:
            return None
        return LoadSpec(deployment_id, self.ref, max_batch_size=4, max_wait_ms=1)

    def mark_ready(self, deployment_id: str) -> bool:
        self.outcomes.append(("ready", ""))
        return self.ready_ok

    def mark_failed(self, deployment_id: str, message: str) -> bool:
        self.outcomes.append(("failed", message))
        return True


def _manager(tmp_path: Path, store: LocalBlobStore, source: FakeSource) -> ServingManager:
    settings = Settings(environment="test", var_dir=tmp_path / "var", inference_threads=1)
    return ServingManager(settings, store, source)


def test_concurrent_requests_share_one_load_and_predict(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    source = FakeSource(stored_ref(store, tiny))
    manager = _manager(tmp_path, store, source)

    async def main() -> None:
        await manager.start()
        results = await asyncio.gather(
            *(manager.predict("dep_1", ["good great film", ("bad", "the plot")]) for _ in range(5))
        )
        assert source.loads == 1
        assert all([p.label for p in r] == ["positive", "negative"] for r in results)
        await manager.close()

    asyncio.run(main())


def test_warm_up_records_failure_with_the_reason(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    source = FakeSource(stored_ref(store, tiny, b"not the recorded archive"))
    manager = _manager(tmp_path, store, source)

    async def main() -> None:
        await manager.start()
        await manager.warm_up("dep_1")
        assert source.outcomes[0][0] == "failed"
        assert "archive sha256 mismatch" in source.outcomes[0][1]
        assert not manager.is_loaded("dep_1")
        await manager.close()

    asyncio.run(main())


def test_deleted_during_warm_up_is_not_kept(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    source = FakeSource(stored_ref(store, tiny), ready_ok=False)  # the row is gone
    manager = _manager(tmp_path, store, source)

    async def main() -> None:
        await manager.start()
        await manager.warm_up("dep_1")
        assert source.outcomes == [("ready", "")]
        assert not manager.is_loaded("dep_1")
        source.ref = None  # and a late predict finds no deployment at all
        with pytest.raises(DeploymentGone):
            await manager.predict("dep_1", ["good"])
        await manager.close()

    asyncio.run(main())
