"""Celery workers: the app and its routing (`celery_app`), the thin tasks (`tasks`), the job
logic they call (`job_runner`), and the stale-job reaper (`reaper`).

Importing this package loads neither torch nor the engine; the job task imports
`sec_engine.pipeline` inside the pool child that runs it.
"""
