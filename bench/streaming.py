"""bench/streaming: the API's resident memory while a 1 GB object goes through it to and from S3.

    scripts/s3_server.sh                     # an S3 server on 127.0.0.1:8333 (SeaweedFS)
    python -m bench.streaming                # 1 GB up and down (~2-4 min, ~5 GB of disk)
    python -m bench.streaming --size-mb 64   # a quick wiring run

Starts the real API (uvicorn, one process) with its blob store in a fresh bucket of the S3
server, then:

- upload: `POST /v1/models` with a 1 GB model archive (a valid HF folder: config.json,
  vocab.txt and one safetensors file of random bytes, in an uncompressed tar) — the API
  receives it, extracts and checks it, and puts the archive into S3 (multipart);
- download: a ready artifact whose archive is a 1 GB blob in the same bucket (the row is
  inserted the way the worker writes it), fetched with `GET /v1/artifacts/{id}/download` and
  hashed on the client; the sha256 must match the one the API announces.

The API process's resident set size (psutil) is sampled every 20 ms through each transfer.
The figure is its growth over the idle process: the target is < 100 MB either way
(docs/DESIGN_NOTES.md#targets). Writes bench/results/streaming.{json,md}, or
streaming.quick.* for a size under 1 GB. Not a timed test: the MB/s are context only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from app.db.migrate import upgrade
from app.db.models import Artifact, ArtifactStatus, Dataset, Job, JobStatus
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.settings import Settings
from app.storage import artifact_key, store_from_settings
from app.tenants.service import create_api_key, create_tenant
from bench.common import RESULTS, machine_info
from bench.serving.run import _free_port, _start_server

TARGET_GROWTH_MB = 100.0
CHUNK = 1024 * 1024
DEFAULT_ENDPOINT = os.environ.get("SEC_TEST_S3_ENDPOINT", "http://127.0.0.1:8333")
# The local test server's credentials (scripts/s3_server.sh) unless the environment has its own.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": os.environ.get("SEC_TEST_S3_ACCESS_KEY", "sec-test"),
    "AWS_SECRET_ACCESS_KEY": os.environ.get("SEC_TEST_S3_SECRET_KEY", "sec-test-secret"),
    "AWS_DEFAULT_REGION": "us-east-1",
}


class RssSampler:
    """The peak resident set size of one process, sampled in a background thread."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _write_random(out: Any, size: int) -> None:
    left = size
    while left:
        n = min(CHUNK, left)
        out.write(os.urandom(n))
        left -= n


def build_model_archive(folder: Path, size_bytes: int) -> Path:
    """An uncompressed tar of a valid model folder whose safetensors file is `size_bytes`."""
    model = folder / "big-model"
    model.mkdir(parents=True)
    config = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": 8,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "intermediate_size": 8,
    }
    (model / "config.json").write_text(json.dumps(config))
    (model / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]))
    n = size_bytes // 4
    header = json.dumps({"filler": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    header_bytes = header.encode() + b" " * (-len(header) % 8)
    with (model / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
        _write_random(f, 4 * n)
    archive = folder / "big-model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(model, arcname="big-model")
    return archive


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def bucket(endpoint: str) -> Iterator[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"sec-bench-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)


def register_artifact(settings: Settings, blob: Path) -> tuple[str, str]:
    """A tenant, a key and a ready artifact whose archive is `blob`: (api key, artifact id)."""
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    store = store_from_settings(settings)
    try:
        with unit_of_work(make_sessionmaker(engine)) as s:
            tenant = create_tenant(s, "bench-streaming")
            _key, plaintext = create_api_key(s, tenant.id)
            dataset = Dataset(
                tenant_id=tenant.id,
                name="none (the artifact's job needs a dataset row)",
                format="csv",
                size_bytes=0,
                sha256=hashlib.sha256(b"").hexdigest(),
                rows=0,
                labelled_rows=0,
            )
            s.add(dataset)
            s.flush()
            job = Job(
                tenant_id=tenant.id,
                dataset_id=dataset.id,
                base_model="minilm-l6",
                spec={},
                status=JobStatus.SUCCEEDED.value,
            )
            s.add(job)
            s.flush()
            artifact = Artifact(
                tenant_id=tenant.id,
                job_id=job.id,
                status=ArtifactStatus.READY.value,
                storage_key="pending",
                size_bytes=blob.stat().st_size,
                sha256=_sha256(blob),
                files=[],
                manifest={},
            )
            s.add(artifact)
            s.flush()
            artifact.storage_key = artifact_key(tenant.id, job.id, artifact.id)
            store.put_file(artifact.storage_key, blob)
            return plaintext, artifact.id
    finally:
        engine.dispose()


def upload(base: str, api_key: str, archive: Path, pid: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    with RssSampler(pid) as rss, archive.open("rb") as f:
        start = time.monotonic()
        r = httpx.post(
            f"{base}/v1/models",
            headers=headers,
            files={"file": (archive.name, f, "application/x-tar")},
            timeout=1800,
        )
        seconds = time.monotonic() - start
    if r.status_code != 201:
        raise SystemExit(f"upload refused: {r.status_code} {r.text}")
    return {"seconds": round(seconds, 1), "peak_rss": rss.peak, "model_id": r.json()["id"]}


def download(base: str, api_key: str, artifact_id: str, pid: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    digest = hashlib.sha256()
    size = 0
    with RssSampler(pid) as rss:
        start = time.monotonic()
        url = f"{base}/v1/artifacts/{artifact_id}/download"
        with httpx.stream("GET", url, headers=headers, timeout=1800) as r:
            if r.status_code != 200:
                raise SystemExit(f"download refused: {r.status_code} {r.read()!r}")
            announced = r.headers["X-Checksum-SHA256"]
            for chunk in r.iter_bytes(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        seconds = time.monotonic() - start
    if digest.hexdigest() != announced:
        raise SystemExit("the downloaded bytes do not match the announced sha256")
    return {"seconds": round(seconds, 1), "peak_rss": rss.peak, "bytes": size}


def _mb(n: float) -> float:
    return round(n / 1024**2, 1)


def run(size_mb: int, endpoint: str) -> dict[str, Any]:
    size = size_mb * 1024**2
    with (
        tempfile.TemporaryDirectory(prefix="sec-bench-streaming-") as tmp,
        bucket(endpoint) as name,
    ):
        work = Path(tmp)
        var = work / "var"
        settings = Settings(
            var_dir=var,
            store_url=f"s3://{name}/bench",
            s3_endpoint_url=endpoint,
            max_model_archive_bytes=size + 64 * 1024**2,
            log_level="WARNING",
        )
        archive = build_model_archive(work / "upload", size)
        blob = work / "artifact.tar.gz"
        with blob.open("wb") as f:
            _write_random(f, size)
        api_key, artifact_id = register_artifact(settings, blob)
        blob.unlink()

        env = dict(os.environ)
        env.update(
            {
                "SEC_VAR_DIR": str(var),
                "SEC_DATABASE_URL": settings.database_url,
                "SEC_BROKER_URL": settings.broker_url,
                "SEC_STORE_URL": settings.store_url,
                "SEC_S3_ENDPOINT_URL": endpoint,
                "SEC_MAX_MODEL_ARCHIVE_BYTES": str(settings.max_model_archive_bytes),
                "SEC_LOG_LEVEL": "WARNING",
            }
        )
        port = _free_port()
        server = _start_server(env, port, work / "api.log")
        base = f"http://127.0.0.1:{port}"
        try:
            # One authenticated request first, so the idle figure includes what any
            # request loads (auth, the database pool), not just the bare process.
            httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {api_key}"})
            idle = psutil.Process(server.pid).memory_info().rss
            up = upload(base, api_key, archive, server.pid)
            archive.unlink()
            down = download(base, api_key, artifact_id, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    up_growth, down_growth = up["peak_rss"] - idle, down["peak_rss"] - idle
    return {
        "command": " ".join(["python -m bench.streaming", *sys.argv[1:]]),
        "machine": machine_info(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "object_mb": size_mb,
        "store": "s3 (SeaweedFS)",
        "api_idle_rss_mb": _mb(idle),
        "upload": {
            "seconds": up["seconds"],
            "mb_per_s": round(size_mb / max(up["seconds"], 1e-9), 1),
            "api_peak_rss_mb": _mb(up["peak_rss"]),
            "api_rss_growth_mb": _mb(up_growth),
        },
        "download": {
            "seconds": down["seconds"],
            "mb_per_s": round(size_mb / max(down["seconds"], 1e-9), 1),
            "api_peak_rss_mb": _mb(down["peak_rss"]),
            "api_rss_growth_mb": _mb(down_growth),
            "sha256_checked": True,
        },
        "target_growth_mb": TARGET_GROWTH_MB,
        "met": max(up_growth, down_growth) / 1024**2 < TARGET_GROWTH_MB,
    }


def write_reports(result: dict[str, Any], stem: str) -> None:
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    up, down = result["upload"], result["download"]
    load = result["machine"]["load_average_at_start"][0], result["load_average_at_end"][0]
    lines = [
        f"# Streaming a {result['object_mb']} MB object through the API ({result['store']})",
        "",
        f"Command: `{result['command']}` · load average {load[0]} at start, {load[1]} at end ·"
        f" {result['machine']['cpu']}",
        "",
        f"The API process idles at {result['api_idle_rss_mb']} MB resident. Target: growth"
        f" < {result['target_growth_mb']:g} MB in each direction.",
        "",
        "| transfer | seconds | MB/s | API peak RSS (MB) | growth (MB) |",
        "|---|---:|---:|---:|---:|",
        f"| upload (POST /v1/models, extracted, checked, put to S3) | {up['seconds']} |"
        f" {up['mb_per_s']} | {up['api_peak_rss_mb']} | {up['api_rss_growth_mb']} |",
        f"| download (GET artifact, streamed from S3, sha256 checked) | {down['seconds']} |"
        f" {down['mb_per_s']} | {down['api_peak_rss_mb']} | {down['api_rss_growth_mb']} |",
        "",
        f"Target met: **{'yes' if result['met'] else 'no'}**.",
        "",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--s3-endpoint", default=DEFAULT_ENDPOINT)
    args = parser.parse_args(argv)
    if "AWS_ACCESS_KEY_ID" not in os.environ:
        os.environ.update(TEST_CREDENTIALS)  # the API subprocess inherits them
    result = run(args.size_mb, args.s3_endpoint)
    stem = "streaming" if args.size_mb >= 1024 else "streaming.quick"
    write_reports(result, stem)
    print(json.dumps(result, indent=2))
    if not result["met"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
