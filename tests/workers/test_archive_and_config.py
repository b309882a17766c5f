"""The artifact archive is reproducible and plain; the Celery config suits long jobs."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from app.queue import QueueName, TaskName
from app.settings import Settings
from sec_engine.artifact_contract import describe_files
from workers.archive import make_archive
from workers.celery_app import TASK_ROUTES, celery_config, time_limits

pytestmark = pytest.mark.unit


def _tree(root: Path) -> Path:
    (root / "b").mkdir(parents=True)
    (root / "b" / "z.bin").write_bytes(b"z" * 1000)
    (root / "a.json").write_text("{}")
    return root


def test_archive_is_deterministic(tmp_path: Path) -> None:
    src = _tree(tmp_path / "out")
    first = make_archive(src, tmp_path / "one.tar.gz", top="job_1")
    os.utime(src / "a.json", (1, 1))  # mtimes must not matter
    second = make_archive(src, tmp_path / "two.tar.gz", top="job_1")
    assert first == second
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        assert tar.getnames() == ["job_1/a.json", "job_1/b/z.bin"]
        assert all(m.isfile() and m.mtime == 0 for m in tar.getmembers())
    assert [f.path for f in describe_files(src)] == ["a.json", "b/z.bin"]
    assert not (tmp_path / "one.tar.gz.part").exists()


def test_archive_refuses_links(tmp_path: Path) -> None:
    src = _tree(tmp_path / "out")
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="link"):
        make_archive(src, tmp_path / "x.tar.gz", top="job")


def test_celery_config_for_long_jobs(tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path, job_hard_limit_minutes=60, broker_url="redis://127.0.0.1:6379/0"
    )
    conf = celery_config(settings)
    soft, hard = time_limits(settings)
    assert hard == 3600
    assert 0 < soft < hard
    assert conf["task_acks_late"]
    assert conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] > hard
    assert conf["accept_content"] == ["json"]
    assert conf["task_ignore_result"]
    assert TASK_ROUTES[TaskName.RUN_JOB] == {"queue": QueueName.GPU}
    assert TASK_ROUTES[TaskName.REAP] == {"queue": QueueName.CPU}
    assert conf["beat_schedule"]["reap-stale-jobs"]["task"] == "sec.jobs.reap"
    sweep = conf["beat_schedule"]["sweep-partial-artifact-writes"]
    assert sweep["task"] == TaskName.SWEEP_PARTIAL_WRITES == "sec.artifacts.sweep_partial_writes"
    assert TASK_ROUTES[TaskName.SWEEP_PARTIAL_WRITES] == {"queue": QueueName.CPU}
    # kombu's SQLAlchemy transport hands its options to create_engine, which refuses this one.
    embedded = Settings(var_dir=tmp_path)
    assert celery_config(embedded)["broker_transport_options"] == {}


def test_task_names_are_registered() -> None:
    from workers import tasks  # noqa: F401  (registers the tasks)
    from workers.celery_app import app

    assert {"sec.jobs.run", "sec.jobs.reap"} <= set(app.tasks)
