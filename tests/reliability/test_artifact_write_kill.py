"""Point 10 (last item): a worker killed while it writes the artifact (packing the archive, or
copying it into the artifact store) never leaves an artifact marked `ready` whose stored file
is missing or does not match the recorded sha256. The job is retried and ends with exactly one
good artifact; the store's sweep then clears the stray temporary files of killed copies.
Trials per stage: `SEC_ARTIFACT_KILL_TRIALS` (1 in `make test`, 5 in `make chaos`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.models import Artifact, ArtifactStatus, JobStatus
from app.storage import LocalBlobStore
from tests.reliability.harness import (
    Stack,
    chaos_settings,
    figure,
    kill_child,
    reaper_thread,
    stack,
    trials,
)

pytestmark = pytest.mark.integration

# Random bytes do not compress: packing and copying them takes long enough to be hit.
BIG_OUTPUT = {"SEC_FAKE_STEPS": "2", "SEC_FAKE_OUTPUT_BYTES": str(48 * 1024 * 1024)}


def _kill_when(s: Stack, job_id: str, pattern: str, root: Path) -> bool:
    """SIGKILL the job's worker child as soon as a file matching `pattern` exists under `root`
    (the half-written archive or store copy). False if the write was never caught."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if next(root.glob(pattern), None) is not None:
            kill_child(s.job(job_id))
            return True
        if s.job(job_id).status == JobStatus.SUCCEEDED:
            return False
        time.sleep(0.002)
    return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_during_artifact_write(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    n = trials("SEC_ARTIFACT_KILL_TRIALS", 1)
    store_root = settings.var_dir / "store"
    # Patterns name the job: an earlier trial's leftovers must not trigger a kill.
    stages = {
        "archive": (settings.work_dir, "{job}/*/*.tar.gz.part"),
        "store": (store_root, "*/{job}/.*.tmp"),
    }
    kills = dict.fromkeys(stages, 0)
    jobs: list[str] = []
    with stack(tmp_path, settings) as s, reaper_thread(settings), s.worker("w", **BIG_OUTPUT):
        for _ in range(n):
            for stage, (root, pattern) in stages.items():
                job_id = s.submit()
                jobs.append(job_id)
                kills[stage] += _kill_when(s, job_id, pattern.format(job=job_id), root)
                assert s.wait_terminal(job_id) is not None, s.log_tail()
        with s.sessions() as db:
            ready = list(
                db.scalars(select(Artifact).where(Artifact.status == ArtifactStatus.READY.value))
            )
    missing = [a.id for a in ready if not (store_root / a.storage_key).is_file()]
    bad = [
        a.id
        for a in ready
        if a.id not in missing and _sha256(store_root / a.storage_key) != a.sha256
    ]
    per_job = {j: sum(a.job_id == j for a in ready) for j in jobs}
    succeeded = sum(s.job(j).status == JobStatus.SUCCEEDED for j in jobs)
    stray = len(list(store_root.rglob(".*.tmp")))
    # Every job is finished, so no writer is alive: the hourly sweep (here with no age
    # threshold) must clear every leftover and nothing else.
    swept = LocalBlobStore(store_root).sweep_partial_writes(older_than_seconds=0.0)
    stray_after_sweep = len(list(store_root.rglob(".*.tmp")))
    missing_after_sweep = [a.id for a in ready if not (store_root / a.storage_key).is_file()]
    leftover_work = (
        len(list(settings.work_dir.rglob("*.part"))) if settings.work_dir.exists() else 0
    )
    figure(
        "kill_during_artifact_write",
        trials=len(jobs),
        killed_mid_archive=kills["archive"],
        killed_mid_store=kills["store"],
        jobs_succeeded=succeeded,
        ready_artifacts=len(ready),
        ready_missing_file=len(missing),
        ready_bad_checksum=len(bad),
        stray_store_tmp_files=stray,
        swept_tmp_files=swept,
        stray_after_sweep=stray_after_sweep,
        leftover_partial_archives=leftover_work,
    )
    assert kills["archive"] >= 1, "no archive write was interrupted"
    assert kills["store"] >= 1, "no store write was interrupted"
    assert not missing
    assert not bad
    assert swept == stray
    assert stray_after_sweep == 0
    assert not missing_after_sweep
    assert all(count == 1 for count in per_job.values()), per_job
    assert succeeded == len(jobs)
    assert leftover_work == 0  # the retry cleared the killed attempt's scratch folder
