"""The Celery application of the workers, configured for long GPU jobs (docs/DESIGN_NOTES.md, choices).

Start a worker with `celery -A workers.celery_app worker -Q gpu,cpu -c 1`. Importing this
module loads settings and Celery only: no torch, no engine, no CUDA in the parent process
(the engine is imported inside the task, in the pool child).

Choices, and why:
- JSON only, results ignored: the job row is the source of truth, not a result backend.
- `acks_late` + `reject_on_worker_lost` + prefetch 1: a message is acknowledged only when the
  job ends, a worker holds at most one job it has not started, and a crashed worker's message
  goes back to the broker (on Redis). Redelivery is harmless: the task claims the job with a
  conditional UPDATE, so a second delivery does nothing.
- `visibility_timeout` above the hard time limit: Redis must not hand a job that is still
  running to a second worker. A worker that dies is detected sooner by the job lease (the
  reaper), not by the broker.
- Time limits are enforced by the prefork pool (not by `--pool=solo`), which is why every
  worker here runs prefork with `-c 1`: one job at a time, the engine in a child process.
- kombu's SQLAlchemy transport (the embedded default) never redelivers a fetched message,
  so on it the reaper alone recovers jobs from dead workers.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.queue import QueueName, TaskName
from app.settings import Settings, get_settings

# The one central routing map: every task by its explicit dotted name.
TASK_ROUTES: dict[str, dict[str, str]] = {
    TaskName.RUN_JOB.value: {"queue": QueueName.GPU.value},
    TaskName.REAP.value: {"queue": QueueName.CPU.value},
    TaskName.SWEEP_PARTIAL_WRITES.value: {"queue": QueueName.CPU.value},
}

# How often beat runs the reaper. Short against the lease so a dead worker's job comes back
# within about lease + this interval.
REAP_INTERVAL_SECONDS = 60.0
# How often beat clears dead writers' temporary files from the artifact store (a directory walk).
SWEEP_INTERVAL_SECONDS = 3600.0


def time_limits(settings: Settings) -> tuple[float, float]:
    """(soft, hard) task time limits in seconds, from `job_hard_limit_minutes`.

    The soft limit leaves a grace period (5 %, between 30 s and 10 min) for the task to record
    the failure before the pool kills the process at the hard limit.
    """
    hard = settings.job_hard_limit_minutes * 60.0
    grace = min(max(hard * 0.05, 30.0), 600.0)
    soft = max(hard - grace, hard / 2)
    return soft, hard


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options. Only brokers with a visibility timeout get one: kombu's
    SQLAlchemy transport passes its options to `create_engine`, which refuses unknown ones."""
    _, hard = time_limits(settings)
    if settings.broker_url.split("://", 1)[0] in ("redis", "rediss", "sqs"):
        # Above the longest job, plus an hour: Redis must not redeliver a job that still runs.
        short = settings.broker_visibility_timeout_seconds
        if short is None:
            return {"visibility_timeout": int(hard) + 3600}
        # A short timeout (tests) is only meaningful if kombu sweeps for expired messages at
        # that pace: by default it scans about every 100 s (10 s x a throttle of 10).
        return {
            "visibility_timeout": short,
            "unacked_restore_interval": max(1, min(short, 10)),
            "unacked_restore_throttle": 1,
        }
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    soft, hard = time_limits(settings)
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # Retry a lost broker forever (Celery's default gives up after 100 tries): a worker
        # must outlive a long Redis outage and consume again once it is back.
        "broker_connection_max_retries": None,
        "broker_transport_options": transport_options(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        "task_routes": TASK_ROUTES,
        "task_default_queue": QueueName.CPU.value,
        "task_create_missing_queues": True,
        "worker_prefetch_multiplier": 1,
        # With acks_late, a lost broker connection means the message will be redelivered;
        # stop the running task rather than finish work that another worker will redo.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "reap-stale-jobs": {
                "task": TaskName.REAP.value,
                "schedule": REAP_INTERVAL_SECONDS,
                "options": {"queue": QueueName.CPU.value, "expires": REAP_INTERVAL_SECONDS},
            },
            "sweep-partial-artifact-writes": {
                "task": TaskName.SWEEP_PARTIAL_WRITES.value,
                "schedule": SWEEP_INTERVAL_SECONDS,
                "options": {"queue": QueueName.CPU.value, "expires": SWEEP_INTERVAL_SECONDS},
            },
        },
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
    }


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("sec-workers")
    app.conf.update(celery_config(settings))
    # Register the tasks with this app (the module is tiny and imports nothing heavy).
    app.conf.update(include=["workers.tasks"])
    return app


app = create_celery_app(get_settings())
