"""The user commands of `sec`: output, ids for scripts, the API's error messages (never a
traceback) and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job
from app.db.session import unit_of_work
from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import GOOD_CSV, TenantKey
from tests.cli.conftest import Sec
from tests.client.conftest import finish_job, write_progress
from tests.client.inline_worker import InlineWorker

pytestmark = pytest.mark.unit


def last_line(stdout: str) -> str:
    """The in-process app logs to the same stdout; what `-q` printed is the last line."""
    return stdout.strip().splitlines()[-1]


def json_block(stdout: str) -> Any:
    """The JSON `--json` printed, among the in-process app's log lines."""
    lines = stdout.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start : lines.index("}", start) + 1]))


def test_upload_submit_list(sec: Sec, tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    data.write_bytes(GOOD_CSV)
    shown = sec("datasets", "upload", str(data))
    assert shown.exit_code == 0, shown.output
    assert "4 labelled" in shown.stdout
    quiet = sec("datasets", "upload", str(data), "-q")
    dataset_id = last_line(quiet.stdout)
    assert dataset_id.startswith("ds_"), quiet.output

    spec = tmp_path / "spec.yaml"
    spec.write_text("base_model: minilm-l6\nbudget: {max_minutes: 7}\n")
    submitted = sec("jobs", "submit", str(spec), "--dataset", dataset_id, "-q")
    assert submitted.exit_code == 0, submitted.output
    job_id = last_line(submitted.stdout)
    assert job_id.startswith("job_")

    listed = sec("jobs", "list")
    assert listed.exit_code == 0
    assert job_id in listed.stdout
    assert "queued" in listed.stdout
    as_json = sec("jobs", "get", job_id, "--json")
    assert '"max_minutes": 7' in as_json.stdout


def test_api_errors_print_the_message_and_exit_1(sec: Sec, tmp_path: Path) -> None:
    missing = sec("jobs", "get", "job_nope")
    assert missing.exit_code == 1
    assert "job 'job_nope' not found" in missing.stderr
    assert "Traceback" not in missing.output

    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: ds_nope\nbudget: {max_minutes: 5, typo: 1}\n")
    invalid = sec("jobs", "submit", str(spec))
    assert invalid.exit_code == 1
    assert "unknown field 'budget.typo'" in invalid.stderr

    bad_key = sec("jobs", "list", key="sec_" + "x" * 43)
    assert bad_key.exit_code == 1
    assert "401" in bad_key.stderr


def test_usage_errors_exit_2(sec: Sec, tmp_path: Path) -> None:
    no_key = sec("jobs", "list", key="")
    assert no_key.exit_code == 2
    assert "SEC_API_KEY" in no_key.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text("- not\n- a mapping\n")
    assert sec("jobs", "submit", str(spec)).exit_code == 2


def test_watch_follows_the_job_to_the_end(sec: Sec, job_a: str, db: sessionmaker[Session]) -> None:
    write_progress(db, job_a, steps=3)
    finish_job(db, job_a)  # the stream replays everything, then ends
    watched = sec("jobs", "watch", job_a)
    assert watched.exit_code == 0, watched.output
    out = watched.stdout
    assert "aip.step" in out  # events
    assert "λ1 0.400" in out  # the last controller step
    assert "λ2 0.700" in out
    assert "succeeded" in out
    assert "0.88" in out  # the before/after table


def test_watch_exits_1_when_the_job_failed(sec: Sec, job_a: str, db: sessionmaker[Session]) -> None:
    from app.db.models import JobStatus
    from tests.app.conftest import set_status

    set_status(db, job_a, JobStatus.FAILED)
    watched = sec("jobs", "watch", job_a, "--poll")
    assert watched.exit_code == 1
    assert "failed" in watched.stdout


def test_plan_prints_the_plan_and_json_the_raw_dict(
    sec: Sec, dataset_a: str, inline_worker: InlineWorker, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("base_model: minilm-l6\nbudget: {max_minutes: 10}\n")
    shown = sec("jobs", "plan", str(spec), "--dataset", dataset_a)
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    for words in ("teacher", "student (compressing)", "total", "budget (max_minutes)", "fits"):
        assert words in out, out
    assert "yes" in out

    raw = sec("jobs", "plan", str(spec), "--dataset", dataset_a, "--json")
    assert raw.exit_code == 0, raw.output
    plan = json_block(raw.stdout)
    assert plan["fits"] is True
    assert plan["budget_minutes"] == 10
    assert plan["teacher_steps"] > 0
    assert set(plan["predicted_seconds"]) >= {"teacher", "compressing"}

    # `jobs get` of the dry-run job shows its plan, not a teacher-vs-compressed table.
    jobs = sec("jobs", "list", "--json")
    job_id = json_block(jobs.stdout)["data"][0]["id"]
    got = sec("jobs", "get", job_id)
    assert got.exit_code == 0, got.output
    assert "student (compressing)" in got.stdout
    assert "teacher (fp32)" not in got.stdout


def test_plan_too_small_says_so_in_yellow(
    sec: Sec, dataset_a: str, inline_worker: InlineWorker, tmp_path: Path
) -> None:
    inline_worker.step_s = 30.0
    spec = tmp_path / "spec.yaml"
    spec.write_text("budget: {max_minutes: 1}\n")
    shown = sec("jobs", "plan", str(spec), "--dataset", dataset_a)
    assert shown.exit_code == 0, shown.output  # the plan was made; it does not fit
    assert "no" in shown.stdout
    assert "too small for a useful plan" in shown.stdout


def test_plan_of_a_missing_dataset_is_the_api_error(
    sec: Sec, inline_worker: InlineWorker, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("budget: {max_minutes: 5}\n")
    missing = sec("jobs", "plan", str(spec), "--dataset", "ds_nope")
    assert missing.exit_code == 1
    assert "dataset 'ds_nope' not found" in missing.stderr
    assert inline_worker.outcomes == []


def test_get_and_watch_end_with_a_real_jobs_warnings(
    sec: Sec, job_a: str, db: sessionmaker[Session]
) -> None:
    finish_job(db, job_a)
    with unit_of_work(db) as s:
        job = s.get_one(Job, job_a)
        job.metrics = {**job.metrics, "warnings": ["the teacher did not learn: 0.5 vs 0.5"]}
    for command in ("get", "watch"):
        shown = sec("jobs", command, job_a)
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.strip().splitlines()
        assert lines[-1] == "warning: the teacher did not learn: 0.5 vs 0.5", lines[-3:]
        assert "0.88" in shown.stdout  # the before/after table is still there


def test_download_by_job_id(
    sec: Sec,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tenant_a: TenantKey,
    tmp_path: Path,
) -> None:
    early = sec("artifacts", "download", job_a)
    assert early.exit_code == 1
    assert "has no artifact" in early.stderr
    _, payload = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    out = tmp_path / "model.tar.gz"
    got = sec("artifacts", "download", job_a, "-o", str(out))
    assert got.exit_code == 0, got.output
    assert "sha256 verified" in got.stdout
    assert out.read_bytes() == payload


def test_upload_a_model_and_list_it(sec: Sec, tmp_path: Path) -> None:
    from tests.integration.flow import tiny_model_archive

    archive = tmp_path / "tiny-bert.tar.gz"
    archive.write_bytes(tiny_model_archive(tmp_path))
    uploaded = sec("models", "upload", str(archive), "-q")
    assert uploaded.exit_code == 0, uploaded.output
    model_id = last_line(uploaded.stdout)
    assert model_id.startswith("mdl_")
    listed = sec("models", "list")
    assert model_id in listed.stdout
    assert "minilm-l6" in listed.stdout
