"""Validating and storing dataset uploads.

The file is parsed with the engine's own reader (`sec_engine.data.table`, torch-free), so an
upload that is accepted here is one the engine can train on. Nothing is stored unless the
whole file validates. The file goes into the blob store (`app/storage.py`) under
`dataset_key`, which every worker can reach, with its sha256 on the row for the worker to
check; the blob is deleted again if the request's transaction rolls back, so no row points at
a missing blob and no blob is left without a row.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetPurpose
from app.db.hooks import on_rollback
from app.db.models import Dataset, new_id
from app.errors import InvalidInput, PayloadTooLarge
from app.settings import Settings
from app.storage import BlobStore, dataset_key, delete_quietly
from sec_engine.data.table import Format, detect_format, read_table
from sec_engine.errors import DatasetError, DatasetTooLarge

MAX_NAME = 300


def sniff_format(filename: str, data: bytes) -> Format:
    """By extension when there is a known one, else by content (a JSON object per line)."""
    try:
        return detect_format(filename)
    except DatasetError:
        pass
    first = next((line for line in data.lstrip(b"\xef\xbb\xbf").splitlines() if line.strip()), b"")
    return "jsonl" if first.lstrip().startswith(b"{") else "csv"


def create_dataset(
    session: Session,
    settings: Settings,
    store: BlobStore,
    tenant_id: str,
    *,
    filename: str,
    data: bytes,
    name: str | None,
    purpose: DatasetPurpose,
) -> Dataset:
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is {len(data)} bytes; the limit is {settings.max_upload_bytes} bytes"
        )
    fmt = sniff_format(filename, data)
    try:
        table = read_table(
            data,
            fmt,
            max_rows=settings.max_dataset_rows,
            require_labels=purpose is DatasetPurpose.LABELLED,
        )
    except DatasetTooLarge as exc:
        raise PayloadTooLarge(f"invalid dataset: {exc.message}", code="too_many_rows") from exc
    except DatasetError as exc:
        raise InvalidInput(f"invalid dataset: {exc.message}", code="invalid_dataset") from exc

    dataset_id = new_id("ds")
    key = dataset_key(tenant_id, dataset_id, fmt)
    _put(store, key, data, settings.uploads_dir)
    on_rollback(session, lambda: delete_quietly(store, key))

    summary = {**table.summary(), "purpose": purpose.value}
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=(name or Path(filename).name or dataset_id)[:MAX_NAME],
        format=fmt,
        storage_key=key,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=len(table.rows),
        labelled_rows=len(table.labelled),
        has_pairs=table.has_pairs,
        summary=summary,
    )
    session.add(dataset)
    session.flush()
    return dataset


def _put(store: BlobStore, key: str, data: bytes, scratch: Path) -> None:
    """The store takes files (an S3 upload is multipart from a file): one in scratch space,
    removed once stored."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=scratch, prefix=".upload.", suffix=".tmp") as tmp:
        tmp.write(data)
        tmp.flush()
        store.put_file(key, Path(tmp.name))


def has_classes(summary: dict[str, Any]) -> bool:
    """A dataset with this summary is usable as training / validation data: at least two
    classes."""
    labels = summary.get("labels") or []
    return len(labels) >= 2
