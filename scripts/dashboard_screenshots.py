"""Take the README's dashboard screenshots from a real job (docs/screenshots/*.png).

Starts the service on embedded defaults in `var/screenshots`, submits the demo's MiniLM-L6
job (`scripts/demo.py`'s spec and data), opens the dashboard in headless Debian chromium
(playwright), and photographs the job page while the controller trace is streaming in
(`job-live.png`), once the job is done, deployed and tried (`job-done.png`), and the job list
(`jobs.png`). A few minutes on 2 CPU cores.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import httpx
from demo import JOB_SPEC, REPO_ROOT, create_key, start_service, stop_service, wait_ready
from playwright.sync_api import expect, sync_playwright

from sec_client import SecClient
from sec_engine.data.rotten_tomatoes import write_subset

LIVE_POINTS = 6  # controller steps on the chart before the "live" picture is taken
JOB_SECONDS = 1800


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "var" / "screenshots")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    var_dir: Path = args.var_dir.resolve()
    shutil.rmtree(var_dir, ignore_errors=True)
    train, pool = write_subset(var_dir / "data", labelled=800, unlabelled=100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEC_")}
    env["SEC_VAR_DIR"] = str(var_dir)
    log_path = var_dir / "service.log"
    proc = start_service(env, args.port, log_path)
    base = f"http://127.0.0.1:{args.port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as anon:
            wait_ready(anon, proc, log_path)
        key = create_key(env)
        with SecClient(base, key) as sec:
            spec = {
                **JOB_SPEC,
                # The demo's job, with the controller evaluated more often (more chart points)
                # and room in the budget for a busy machine.
                "training": {**JOB_SPEC["training"], "eval_every_steps": 4},
                "budget": {**JOB_SPEC["budget"], "max_minutes": 25},
                "dataset": sec.upload_dataset(train).id,
                "unlabelled_dataset": sec.upload_dataset(pool, purpose="unlabelled").id,
            }
            job_id = sec.submit_job(spec).id
        print(f"job {job_id}; service log {log_path}")
        shoot(base, key, job_id, args.out, args.chromium)
        return 0
    finally:
        stop_service(proc)


def shoot(base: str, key: str, job_id: str, out: Path, chromium: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1360, "height": 980}, device_scale_factor=1)
        page.goto(f"{base}/dashboard/")
        page.fill("#api-key", key)
        page.click("#login-form button[type=submit]")
        expect(page.locator(f"#jobs-table tr[data-job='{job_id}']")).to_be_visible()
        page.click(f"#jobs-table tr[data-job='{job_id}'] a")

        chart = page.locator("#chart-lambda")
        deadline = time.monotonic() + JOB_SECONDS
        while int(chart.get_attribute("data-points") or 0) < LIVE_POINTS:
            # The "live" picture must show a running job, never a finished one.
            status = page.locator("#job-status").inner_text()
            assert status in ("queued", "running"), f"job {status} before {LIVE_POINTS} steps"
            assert time.monotonic() < deadline, "the job did not report enough steps"
            time.sleep(1)
        page.screenshot(path=str(out / "job-live.png"), full_page=True)
        status = page.locator("#job-status").inner_text()
        print(f"job-live.png at {chart.get_attribute('data-points')} controller steps, {status}")

        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_SECONDS * 1000)
        expect(page.locator("#download")).to_be_enabled(timeout=60_000)
        page.click("#deploy")
        expect(page.locator("#deployment-info")).to_contain_text("is ready", timeout=300_000)
        page.click("#predict")
        expect(page.locator("#predictions li")).to_have_count(2, timeout=60_000)
        page.screenshot(path=str(out / "job-done.png"), full_page=True)
        page.click("text=Jobs")
        expect(page.locator(f"#jobs-table tr[data-job='{job_id}']")).to_contain_text("succeeded")
        page.screenshot(
            path=str(out / "jobs.png"), clip={"x": 0, "y": 0, "width": 1360, "height": 230}
        )
        browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    sys.exit(main())
