"""A fast stand-in for `sec_engine.pipeline.run_job`, for the chaos tests only.

A worker runs it when started with `SEC_TEST_ENGINE=tests.reliability.fake_engine:run` and
`SEC_ENVIRONMENT=test` (see `workers.job_runner`). It behaves like the real engine towards the
worker (trace rows, progress, cancel checks, an output folder with a manifest) but takes
seconds, so a test can kill workers dozens of times. Tuned by environment variables:

- `SEC_FAKE_STEPS` / `SEC_FAKE_STEP_SECONDS`: how long it runs (default 10 x 0.3 s);
- `SEC_FAKE_OUTPUT_BYTES`: size of the random weights file (a big one widens the artifact
  write, for the kill-during-write test);
- `SEC_FAKE_POISON=1`: SIGKILL its own process on start (a job that kills every worker);
- `SEC_FAKE_IGNORE_SOFT_LIMIT=1`: swallow the soft time limit and hang (only the hard limit
  stops it).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from sec_engine.callbacks import EngineCallbacks, Phase, TraceRow
from sec_engine.errors import JobCancelled
from sec_engine.result import ArtifactFile, EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def run(
    spec: JobSpec,
    inputs: ResolvedInputs,
    out_dir: Path,
    callbacks: EngineCallbacks,
    checkpoint_dir: Path | None = None,  # the real engine's resume folder; nothing to resume here
) -> EngineResult:
    if os.environ.get("SEC_FAKE_POISON") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    steps = int(_env_float("SEC_FAKE_STEPS", 10))
    step_seconds = _env_float("SEC_FAKE_STEP_SECONDS", 0.3)
    try:
        callbacks.event("fake.started", "fake engine started", {"pid": os.getpid()})
        for step in range(steps):
            if callbacks.should_cancel():
                raise JobCancelled("cancelled")
            callbacks.trace(TraceRow(step=step, phase=Phase.COMPRESSING, lambda1=0.5, lambda2=0.5))
            callbacks.progress(Phase.COMPRESSING, (step + 1) / steps)
            time.sleep(step_seconds)
    except SoftTimeLimitExceeded:
        # The soft limit can land anywhere in a step (a trace write as well as the sleep), so
        # the whole loop ignores it: "stuck in native code", only the hard limit stops this.
        if os.environ.get("SEC_FAKE_IGNORE_SOFT_LIMIT") != "1":
            raise
        time.sleep(3600)
    weights = out_dir / "model.safetensors"
    weights.write_bytes(os.urandom(int(_env_float("SEC_FAKE_OUTPUT_BYTES", 1024))))
    manifest = {
        "spec": spec.model_dump(mode="json"),
        "train_sha256": hashlib.sha256(inputs.train_path.read_bytes()).hexdigest(),
        "wall_seconds": steps * step_seconds,
        "device": "fake",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    files = [
        ArtifactFile(p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(out_dir.iterdir())
    ]
    return EngineResult(out_dir=out_dir, manifest=manifest, files=files, targets_met={})
