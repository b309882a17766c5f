"""The user commands of `sec`: output, ids for scripts, the API's error messages (never a
traceback) and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import GOOD_CSV, TenantKey
from tests.cli.conftest import Sec
from tests.client.conftest import finish_job, write_progress

pytestmark = pytest.mark.unit


def last_line(stdout: str) -> str:
    """The in-process app logs to the same stdout; what `-q` printed is the last line."""
    return stdout.strip().splitlines()[-1]


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
