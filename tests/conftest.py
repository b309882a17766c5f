"""Shared fixtures: private databases and Redis dbs for tests that need real services.

Every test gets its OWN Postgres database (random name, dropped afterwards) and its own Redis
logical database, because several test runs share one Postgres and one Redis. When a service
is down, these fixtures raise: tests that need it fail, they are never skipped.

Tests of the S3 blob store get a fresh bucket on the S3 server (SeaweedFS, started by
scripts/s3_server.sh), emptied and deleted afterwards.

Override the servers with SEC_TEST_POSTGRES_URL (a server URL, its database is ignored),
SEC_TEST_REDIS_URL and SEC_TEST_S3_ENDPOINT (with SEC_TEST_S3_ACCESS_KEY/SECRET_KEY).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

POSTGRES_SERVER = os.environ.get(
    "SEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER = os.environ.get("SEC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
_REDIS_LOCK_KEY = "sec-test:db-owner"
S3_ENDPOINT = os.environ.get("SEC_TEST_S3_ENDPOINT", "http://127.0.0.1:8333")
# The identity scripts/s3_server.sh configures.
S3_ACCESS_KEY = os.environ.get("SEC_TEST_S3_ACCESS_KEY", "sec-test")
S3_SECRET_KEY = os.environ.get("SEC_TEST_S3_SECRET_KEY", "sec-test-secret")
S3_BUCKET_PREFIX = "sec-test-"
# A test bucket older than this is a leftover of a killed run (pytest's timeout is 900 s).
_S3_STALE_BUCKET_SECONDS = 3600


def migrate(database_url: str) -> None:
    """Build a test database the way production does: by running the Alembic migrations."""
    from app.db.migrate import upgrade

    upgrade(database_url)


def _admin_conninfo() -> str:
    return (
        make_url(POSTGRES_SERVER).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sec.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database; dropped (connections and all) after the test."""
    import psycopg

    name = f"sec_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis logical database (1-15), claimed with a lock key and flushed after."""
    import redis

    token = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}", socket_connect_timeout=5)
        # Claim an empty db nobody holds; the expiry frees it if a test run is killed.
        if client.set(_REDIS_LOCK_KEY, token, nx=True, ex=3600):
            if client.dbsize() != 1:  # someone else keeps data here: leave it alone
                client.delete(_REDIS_LOCK_KEY)
                client.close()
                continue
            try:
                yield f"{REDIS_SERVER}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis database (1-15) for this test")


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test S3 server, for one test. `store_url` is what SEC_STORE_URL takes
    (s3://bucket/prefix) and `endpoint_url` what SEC_S3_ENDPOINT_URL takes; `client` is a boto3
    client with the test credentials, for looking behind the store's back."""

    endpoint_url: str
    bucket: str
    prefix: str
    client: Any

    @property
    def store_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def store(self, **options: Any) -> Any:
        """An S3BlobStore on this bucket; `options` go to its constructor."""
        from app.storage import S3BlobStore

        return S3BlobStore(self.bucket, self.prefix, endpoint_url=self.endpoint_url, **options)

    def object_keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def multipart_uploads(self) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=self.bucket).get(
            "Uploads", []
        )
        return uploads


def s3_client(endpoint_url: str = S3_ENDPOINT) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 2},
        ),
    )


def _delete_bucket(client: Any, bucket: str) -> None:
    """Abort the bucket's unfinished uploads, delete its objects, then the bucket."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """The test S3 server, checked once a session: a boto3 client on it. Sets the AWS_*
    variables to the test credentials for the session, so that S3BlobStore (boto3's standard
    credential chain) and the worker processes tests start (they inherit os.environ) reach it;
    a developer's own AWS credentials would be refused there. Removes the buckets that killed
    runs left behind."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    try:
        buckets = client.list_buckets().get("Buckets", [])
    except (BotoCoreError, ClientError) as exc:
        raise RuntimeError(
            f"no S3 server answers on {S3_ENDPOINT} with the test credentials ({exc}); "
            "start one with: bash scripts/s3_server.sh"
        ) from exc
    cutoff = time.time() - _S3_STALE_BUCKET_SECONDS
    for bucket in buckets:
        if bucket["Name"].startswith(S3_BUCKET_PREFIX) and (
            bucket["CreationDate"].timestamp() < cutoff
        ):
            _delete_bucket(client, bucket["Name"])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        yield client


@pytest.fixture
def s3_bucket(s3_server: Any) -> Iterator[S3Bucket]:
    """A fresh, empty bucket (random name) on the test S3 server; emptied and deleted after
    the test, unfinished multipart uploads included."""
    bucket = f"{S3_BUCKET_PREFIX}{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(Bucket=bucket)
    try:
        yield S3Bucket(endpoint_url=S3_ENDPOINT, bucket=bucket, prefix="sec", client=s3_server)
    finally:
        _delete_bucket(s3_server, bucket)


@pytest.fixture
def s3_store_url(s3_bucket: S3Bucket) -> str:
    """SEC_STORE_URL for a fresh test bucket (SEC_S3_ENDPOINT_URL: `S3_ENDPOINT`)."""
    return s3_bucket.store_url
