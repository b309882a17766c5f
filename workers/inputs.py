"""Turning a job's references (dataset ids, a base model name or id) into files the engine opens.

Every lookup is scoped to the job's tenant, so a spec can never reach another tenant's data
even if an id leaked into it. A reference that cannot be resolved is an engine error with a
stable code (the job fails with a message that names it), not an internal error.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset, Job, Model
from sec_engine.errors import DatasetError, ModelLoadError
from sec_engine.models.builtin import builtin_model
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec


def _dataset_path(session: Session, tenant_id: str, dataset_id: str) -> Path:
    storage_path = session.scalar(
        select(Dataset.storage_path).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )
    if storage_path is None:
        raise DatasetError(f"dataset {dataset_id!r} not found")
    path = Path(storage_path)
    if not path.is_file():
        raise DatasetError(
            f"the file of dataset {dataset_id!r} is missing on this worker ({path}); "
            "workers and the API must share the uploads directory"
        )
    return path


def _model_ref(session: Session, tenant_id: str, base_model: str) -> str:
    """A built-in name stays a name (the engine's registry finds it); an upload becomes its folder."""
    if builtin_model(base_model) is not None:
        return base_model
    storage_path = session.scalar(
        select(Model.storage_path).where(Model.id == base_model, Model.tenant_id == tenant_id)
    )
    if storage_path is None:
        raise ModelLoadError(f"unknown base model {base_model!r}")
    path = Path(storage_path)
    if not path.is_dir():
        raise ModelLoadError(f"the files of model {base_model!r} are missing on this worker")
    return str(path)


def resolve_inputs(session: Session, job: Job, spec: JobSpec) -> ResolvedInputs:
    tenant = job.tenant_id
    return ResolvedInputs(
        model=_model_ref(session, tenant, spec.base_model),
        train_path=_dataset_path(session, tenant, job.dataset_id),
        validation_path=(
            _dataset_path(session, tenant, spec.validation_dataset)
            if spec.validation_dataset
            else None
        ),
        unlabelled_path=(
            _dataset_path(session, tenant, spec.unlabelled_dataset)
            if spec.unlabelled_dataset
            else None
        ),
    )
