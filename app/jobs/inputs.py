"""A job's inputs, resolved once, at submit, and stored on the job (`jobs.inputs`).

The spec's references (dataset ids, a base model name or id) are checked against the
tenant's rows, in the order a user fixes them, and stored as what a worker fetches: one ref
per input, `{"key", "sha256"}` for a blob in the store (any worker can download it and check
it), or `{"path"}` for an upload from before the blob store (migration 0003; only a worker
on the API's machine can open it). A built-in base model stays its name. The worker reads no
dataset or model row: the check is made once, scoped to the job's tenant, so a spec can never
reach another tenant's data. This module owns the stored format: `resolve` writes it, `parse`
reads it back for the worker (`workers/staging.py` fetches what it names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repo
from app.datasets.service import has_classes
from app.errors import InvalidInput, NotFound
from app.models import repository as models_repo
from sec_engine.errors import SpecError
from sec_engine.models.builtin import BUILTIN_MODELS
from sec_engine.spec import JobSpec

MODEL_ID_PREFIX = "mdl_"


@dataclass(frozen=True)
class InputRef:
    """Where one input is: a blob `key` with its `sha256`, or (an older upload) a `path`."""

    key: str | None = None
    sha256: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, key: str | None, sha256: str, path: str | None) -> InputRef:
        return cls(key=key, sha256=sha256) if key else cls(path=path)

    def stored(self) -> dict[str, str]:
        return (
            {"key": self.key, "sha256": self.sha256 or ""}
            if self.key
            else {"path": self.path or ""}
        )

    @classmethod
    def parse(cls, value: dict[str, Any]) -> InputRef:
        if value.get("key") and value.get("sha256"):
            return cls(key=value["key"], sha256=value["sha256"])
        if value.get("path"):
            return cls(path=value["path"])
        raise SpecError(f"the job's stored input {value!r} names neither a blob nor a file")


@dataclass(frozen=True)
class StoredInputs:
    model: str | InputRef  # a built-in name, or an uploaded model's archive (or folder)
    train: InputRef
    validation: InputRef | None = None
    unlabelled: InputRef | None = None


def resolve(session: Session, tenant_id: str, spec: JobSpec) -> dict[str, Any]:
    """The spec's inputs as the job stores them, or the API error that names the reference
    to fix. Two queries at most: the datasets (all at once) and an uploaded model."""
    refs = [spec.dataset, spec.validation_dataset, spec.unlabelled_dataset]
    found = datasets_repo.fits(session, tenant_id, [r for r in refs if r])
    dataset = _dataset(found, spec.dataset, "dataset")
    if not has_classes(dataset.summary):
        raise InvalidInput(
            f"dataset {spec.dataset!r} has no label column with at least 2 classes:"
            " upload it with purpose=labelled, or pass it as unlabelled_dataset",
            code="invalid_spec",
        )
    validation = unlabelled = None
    if spec.validation_dataset is not None:
        validation = _dataset(found, spec.validation_dataset, "validation_dataset")
        if not has_classes(validation.summary):
            raise InvalidInput(
                f"validation_dataset {spec.validation_dataset!r} needs labels with at least"
                " 2 classes",
                code="invalid_spec",
            )
        _check_same_shape(dataset, validation, "validation_dataset")
    if spec.unlabelled_dataset is not None:
        unlabelled = _dataset(found, spec.unlabelled_dataset, "unlabelled_dataset")
        _check_same_shape(dataset, unlabelled, "unlabelled_dataset")
    model = _model(session, tenant_id, spec.base_model)
    return {
        "model": model if isinstance(model, str) else model.stored(),
        "train": _ref(dataset).stored(),
        "validation": _ref(validation).stored() if validation else None,
        "unlabelled": _ref(unlabelled).stored() if unlabelled else None,
    }


def parse(stored: dict[str, Any] | None) -> StoredInputs:
    """The inputs a job stored at submit, for the worker to fetch."""
    if not stored or not stored.get("train"):
        # Only a job row written around the API (a script, a test fixture) lacks them.
        raise SpecError("the job was stored without its resolved inputs; submit it again")
    model = stored["model"]
    return StoredInputs(
        model=model if isinstance(model, str) else InputRef.parse(model),
        train=InputRef.parse(stored["train"]),
        validation=_optional(stored.get("validation")),
        unlabelled=_optional(stored.get("unlabelled")),
    )


def _optional(value: dict[str, Any] | None) -> InputRef | None:
    return None if value is None else InputRef.parse(value)


def _ref(dataset: datasets_repo.DatasetFit) -> InputRef:
    return InputRef.of(dataset.storage_key, dataset.sha256, dataset.storage_path)


def _dataset(
    found: dict[str, datasets_repo.DatasetFit], dataset_id: str, field: str
) -> datasets_repo.DatasetFit:
    dataset = found.get(dataset_id)
    if dataset is None:
        raise NotFound(f"{field}: dataset {dataset_id!r} not found")
    return dataset


def _check_same_shape(
    dataset: datasets_repo.DatasetFit, other: datasets_repo.DatasetFit, field: str
) -> None:
    if other.has_pairs != dataset.has_pairs:
        raise InvalidInput(
            f"dataset and {field} must both be sentence pairs or both single texts",
            code="invalid_spec",
        )


def _model(session: Session, tenant_id: str, base_model: str) -> str | InputRef:
    """A built-in name stays a name (the engine's registry finds its weights on the worker);
    one of the tenant's uploads becomes a ref to its archive."""
    if base_model in BUILTIN_MODELS:
        return base_model
    if base_model.startswith(MODEL_ID_PREFIX):
        found = models_repo.where_stored(session, tenant_id, base_model)
        if found is None:
            raise NotFound(f"base_model: model {base_model!r} not found")
        return InputRef.of(*found)
    names = ", ".join(sorted(BUILTIN_MODELS))
    raise InvalidInput(
        f"unknown base_model {base_model!r}: use a built-in model ({names})"
        " or the id of a model you uploaded (mdl_…)",
        code="unknown_base_model",
    )
