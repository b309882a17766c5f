"""The load smoke's users (run by test_load.py through the `locust` CLI, headless).

Each simulated client submits jobs, polls their status and downloads a finished artifact, as
a dashboard or an SDK would. Inputs come from the environment the test sets.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, between, task

KEYS = os.environ["SEC_LOAD_KEYS"].split(",")
DATASETS = os.environ["SEC_LOAD_DATASETS"].split(",")
ARTIFACTS = os.environ["SEC_LOAD_ARTIFACTS"].split(",")


# Think time between a client's requests, in seconds ("low,high"). The default 0.2-1.0 s is a
# stress profile (about 170 req/s offered by 100 clients); "1,3" matches the SDK, whose
# `wait_for_job` polls every 2 s (about 50 req/s).
WAIT_LOW, WAIT_HIGH = (float(x) for x in os.environ.get("SEC_LOAD_WAIT", "0.2,1.0").split(","))


# FastHttpUser (geventhttpclient) rather than HttpUser (requests): it spends a fraction of the
# client CPU per request, and the clients share the 2 cores with the API they measure.
class ApiClient(FastHttpUser):
    wait_time = between(WAIT_LOW, WAIT_HIGH)

    def on_start(self) -> None:
        i = random.randrange(len(KEYS))
        self.headers = {"Authorization": f"Bearer {KEYS[i]}"}
        self.dataset, self.artifact = DATASETS[i], ARTIFACTS[i]
        self.jobs: list[str] = []

    @task(1)
    def submit(self) -> None:
        r = self.client.post(
            "/v1/jobs",
            json={"dataset": self.dataset},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            name="POST /v1/jobs",
        )
        if r.status_code == 201:
            self.jobs.append(r.json()["id"])

    @task(5)
    def status(self) -> None:
        if self.jobs:
            job = random.choice(self.jobs)
            self.client.get(f"/v1/jobs/{job}", headers=self.headers, name="GET /v1/jobs/{id}")

    @task(2)
    def download(self) -> None:
        self.client.get(
            f"/v1/artifacts/{self.artifact}/download",
            headers=self.headers,
            name="GET /v1/artifacts/{id}/download",
        )
