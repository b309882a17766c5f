"""The dashboard in a real browser (headless Debian chromium, driven by playwright) against the
real service: sign in, submit a small job through the form, watch the live λ chart fill over
server-sent events, see the before/after table, download the artifact (sha256 checked against
the API's record), deploy it and try it.

The page's Content-Security-Policy stays enforced (no `bypass_csp`): the test waits with
locator assertions, which need no `eval` in the page.

Screenshots go to the test's tmp folder; set SEC_E2E_SCREENSHOTS=docs/screenshots to keep them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sec_client import SecClient
from tests.e2e.conftest import Service
from tests.integration.flow import FAST_SPEC, tiny_model_archive
from tests.sec_engine.conftest import write_sentiment_csv

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = os.environ.get("SEC_E2E_CHROMIUM", "/usr/bin/chromium")
JOB_SECONDS = 240


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    # A missing browser is a broken setup, not a reason to skip: `make install` puts it there.
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} not found: apt-get install -y chromium (make install does it)"
    )
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


def test_dashboard_job_end_to_end(service: Service, browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    key = service.create_key("dashboard-e2e")
    # A random-init tiny BERT (uploaded over the API) keeps the job to seconds of training.
    archive = tmp_path / "tiny-bert.tar.gz"
    archive.write_bytes(tiny_model_archive(tmp_path))
    with SecClient(service.url, key) as sec:
        model_id = sec.upload_model(archive).id
    data = write_sentiment_csv(tmp_path / "reviews.csv", 160, unlabelled=20)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The browser logs a failed request as a console error; the one 401 (the wrong key below)
    # is expected, anything else is a bug.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "status of 401" not in msg.text
            else None
        ),
    )

    # Sign in: a wrong key is refused with the API's message, the right one gets in.
    page.goto(service.url + "/")
    expect(page).to_have_url(re.compile(r"/dashboard/"))
    page.fill("#api-key", key + "x")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).not_to_be_empty()
    page.fill("#api-key", key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#tenant-name")).to_have_text("dashboard-e2e")
    expect(page.locator("#jobs-empty")).to_be_visible()

    # Submit through the form: upload the dataset, pick the uploaded model, small budget.
    page.click("text=New job")
    expect(page.locator(f"#base-model option[value='{model_id}']")).to_have_count(1)
    page.set_input_files("#dataset-file", str(data))
    page.select_option("#base-model", model_id)
    page.fill("#max-minutes", "3")
    page.fill("#head-sparsity", "0.5")
    extra = {k: FAST_SPEC[k] for k in ("training", "targets", "seed")}
    page.fill("#spec-extra", json.dumps(extra))
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"#/jobs/job_\w+$"), timeout=30_000)
    job_id = page.url.rsplit("/", 1)[-1]

    # The live chart fills as the controller reports steps.
    lambda_chart = page.locator("#chart-lambda")
    expect(lambda_chart).not_to_have_attribute("data-points", "0", timeout=JOB_SECONDS * 1000)
    expect(page.locator("#chart-lambda canvas")).to_be_visible()
    page.screenshot(path=str(shots / "job-live.png"), full_page=True)

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_SECONDS * 1000)
    expect(page.locator("#metrics-table tbody tr").first).to_be_visible(timeout=30_000)
    expect(page.locator("#events li").last).to_contain_text("job.succeeded")
    with SecClient(service.url, key) as sec:
        job = sec.get_job(job_id)
        trace = sec.trace(job_id)
        assert job.status == "succeeded"
        assert job.spec["base_model"] == model_id
        assert job.spec["budget"]["max_minutes"] == 3
        assert job.artifact_id is not None
        record = sec.get_artifact(job.artifact_id)
    # Every controller step the API holds is on the chart.
    expect(lambda_chart).to_have_attribute("data-points", str(len(trace)))
    assert page.locator("#trace-count").inner_text().startswith(f"{len(trace)} controller step")

    # Download: the browser checks the sha256, the saved file matches the record.
    expect(page.locator("#download")).to_be_enabled(timeout=30_000)
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "artifact.tar.gz"
    info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == record.sha256
    expect(page.locator("#download-status")).to_contain_text("sha256 verified")

    # Deploy and try it.
    page.click("#deploy")
    expect(page.locator("#deployment-info")).to_contain_text("is ready", timeout=120_000)
    page.fill("#predict-input", "great lovely film\nawful dull plot")
    page.click("#predict")
    expect(page.locator("#predictions li")).to_have_count(2, timeout=30_000)
    page.screenshot(path=str(shots / "job-done.png"), full_page=True)

    page.click("text=Jobs")
    expect(page.locator(f"#jobs-table tr[data-job='{job_id}']")).to_contain_text("succeeded")
    page.screenshot(path=str(shots / "jobs.png"))
    assert not errors, errors
    context.close()

    keep = os.environ.get("SEC_E2E_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
