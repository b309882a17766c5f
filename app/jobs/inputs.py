"""A job's inputs, resolved once, at submit, and stored on the job (`jobs.inputs`).

The spec's references (dataset ids, a base model name or id) are checked against the
tenant's rows, in the order a user fixes them, and turned into what the engine opens: file
paths and the base model's built-in name or folder. The worker hands the stored inputs to
the engine as they are and reads no dataset or model row: the check is made once, scoped to
the job's tenant, so a spec can never reach another tenant's data. Whether the files are
present on the worker's machine is the engine's to say when it opens them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repo
from app.datasets.service import has_classes
from app.errors import InvalidInput, NotFound
from app.models import repository as models_repo
from sec_engine.errors import SpecError
from sec_engine.models.builtin import BUILTIN_MODELS
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec

MODEL_ID_PREFIX = "mdl_"


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
    return {
        "model": _model(session, tenant_id, spec.base_model),
        "train_path": dataset.storage_path,
        "validation_path": validation.storage_path if validation else None,
        "unlabelled_path": unlabelled.storage_path if unlabelled else None,
    }


def for_engine(stored: dict[str, Any] | None) -> ResolvedInputs:
    """The inputs a job stored at submit, as the engine takes them."""
    if not stored or not stored.get("train_path"):
        # Only a job row written around the API (a script, a test fixture) lacks them.
        raise SpecError("the job was stored without its resolved inputs; submit it again")
    return ResolvedInputs(
        model=stored["model"],
        train_path=Path(stored["train_path"]),
        validation_path=_path(stored.get("validation_path")),
        unlabelled_path=_path(stored.get("unlabelled_path")),
    )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


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


def _model(session: Session, tenant_id: str, base_model: str) -> str:
    """A built-in name stays a name (the engine's registry finds its weights on the worker);
    one of the tenant's uploads becomes its folder."""
    if base_model in BUILTIN_MODELS:
        return base_model
    if base_model.startswith(MODEL_ID_PREFIX):
        folder = models_repo.storage_path(session, tenant_id, base_model)
        if folder is None:
            raise NotFound(f"base_model: model {base_model!r} not found")
        return folder
    names = ", ".join(sorted(BUILTIN_MODELS))
    raise InvalidInput(
        f"unknown base_model {base_model!r}: use a built-in model ({names})"
        " or the id of a model you uploaded (mdl_…)",
        code="unknown_base_model",
    )
