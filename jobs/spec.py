"""The fine-tune job contract shared by the API and the worker: request in, job view out.

Torch-free: the API imports this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError

from jobs.errors import InvalidJobSpec
from jobs.hyperparams import hyperparams_model
from jobs.records import JobEventRecord, JobRecord
from jobs.states import JobStatus
from model_store.datasets import DatasetStore
from model_store.errors import StoreError
from model_store.store import ModelStore
from model_store.tasks import Task

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
BASE_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]{0,62})(?:@(?P<version>[0-9]+))?$")


class FinetuneRequest(BaseModel):
    """POST /jobs/finetune body."""

    model_config = ConfigDict(extra="forbid")

    task: Task
    dataset_id: str = Field(pattern=NAME_PATTERN)
    base: str = Field(
        pattern=BASE_RE.pattern,
        description="'model' (its active version), 'model@n', or an architecture name"
        " to train from scratch",
    )
    target_model: str = Field(pattern=NAME_PATTERN, description="the model line to publish to")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    auto_activate: bool = Field(
        False, description="activate the new version when it is at least as good as the active"
    )
    webhook_url: HttpUrl | None = None


def parse_base(base: str) -> tuple[str, int | None]:
    """``"model@3"`` -> ("model", 3); ``"model"`` or an arch name -> (name, None)."""
    match = BASE_RE.fullmatch(base)
    if not match:
        raise InvalidJobSpec(f"invalid base {base!r}: use 'model', 'model@n' or an arch name")
    version = match.group("version")
    return match.group("name"), int(version) if version is not None else None


def validate_hyperparameters(task: Task | str, values: dict[str, Any]) -> dict[str, Any]:
    """Validate ``values`` for ``task``; returns them with every default filled in.

    Raises ``InvalidJobSpec`` whose ``errors`` locate each bad field as
    ``["body", "hyperparameters", <field>]`` (the shape of FastAPI's 422 details).
    """
    try:
        model = hyperparams_model(task)
    except ValueError as exc:
        raise InvalidJobSpec(str(exc), [{"loc": ["body", "task"], "msg": str(exc),
                                         "type": "value_error"}]) from None
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", "hyperparameters", *err["loc"]], "msg": err["msg"],
             "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in errors)
        raise InvalidJobSpec(f"invalid hyperparameters for {Task(task).value}: {fields}",
                             errors) from None


def _spec_error(field_name: str, message: str) -> InvalidJobSpec:
    return InvalidJobSpec(message, [{"loc": ["body", field_name], "msg": message,
                                     "type": "value_error"}])


def check_references(request: FinetuneRequest, store_root: Path | str) -> None:
    """What the store can tell before a job is queued: the dataset exists and is for this
    task, the base model/version exists and serves it, the target line serves it.

    An architecture name as base is checked by the worker (the registry imports torch).
    Raises ``InvalidJobSpec`` naming the field.
    """
    task = request.task
    try:
        dataset = DatasetStore(store_root).get(request.dataset_id)
    except StoreError as exc:
        raise _spec_error("dataset_id", str(exc)) from None
    if dataset.task != task:
        raise _spec_error("dataset_id", f"dataset {request.dataset_id!r} is a"
                                        f" {dataset.task.value} dataset, not {task.value}")
    store = ModelStore(store_root)
    models = set(store.model_names())
    name, version = parse_base(request.base)
    try:
        if name in models:
            if store.task_of(name) != task:
                raise _spec_error("base", f"base model {name!r} serves"
                                          f" {store.task_of(name).value}, not {task.value}")
            if version is not None:
                store.manifest(name, version)
            elif store.active_version(name) is None:
                raise _spec_error("base", f"base model {name!r} has no active version:"
                                          f" name one as {name}@<n>")
        elif version is not None:
            raise _spec_error("base", f"base model {name!r} does not exist")
        if request.target_model in models and store.task_of(request.target_model) != task:
            raise _spec_error("target_model", f"model {request.target_model!r} serves"
                              f" {store.task_of(request.target_model).value}, not {task.value}")
    except StoreError as exc:
        raise _spec_error("base", str(exc)) from None


def normalized_request(request: FinetuneRequest) -> FinetuneRequest:
    """The request with validated, default-filled hyper-parameters (what a job stores)."""
    hyper = validate_hyperparameters(request.task, request.hyperparameters)
    return request.model_copy(update={"hyperparameters": hyper})


def request_hash(request: FinetuneRequest) -> str:
    """A stable digest of the request, for idempotency-key conflict detection."""
    body = request.model_dump(mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class JobView(BaseModel):
    """What GET /jobs/{id} returns (and what a webhook receives)."""

    id: str
    task: Task
    status: JobStatus
    dataset_id: str
    base: str
    target_model: str
    hyperparameters: dict[str, Any]
    auto_activate: bool
    epoch: int = Field(description="epochs completed")
    total_epochs: int | None
    step: int = Field(description="optimizer steps completed (whole job)")
    total_steps: int | None = Field(description="optimizer steps of the whole job")
    losses: dict[str, float | None] | None = Field(description="latest training losses")
    # null for a metric that is undefined (e.g. accuracy of a class absent from val)
    val_metrics: dict[str, float | None] | None = Field(
        description="latest validation metrics")
    eta_seconds: float | None
    result_version: str | None = Field(description="'model@n' published by this job")
    activated: bool
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_record(cls, job: JobRecord) -> JobView:
        return cls(
            id=job.id, task=Task(job.task), status=JobStatus(job.status),
            dataset_id=job.dataset_id, base=job.base, target_model=job.target_model,
            hyperparameters=job.hyperparameters or {}, auto_activate=job.auto_activate,
            epoch=job.epoch, total_epochs=job.total_epochs, step=job.step,
            total_steps=job.total_steps, losses=job.losses, val_metrics=job.val_metrics,
            eta_seconds=job.eta_seconds, result_version=job.result_version,
            activated=job.activated, error=job.error, cancel_requested=job.cancel_requested,
            attempts=job.attempts, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, updated_at=job.updated_at,
        )


class JobEvent(BaseModel):
    """One entry of a job's event log (a metrics point, a status change, a sample, a log line)."""

    id: int
    job_id: str
    created_at: datetime
    kind: str
    data: dict[str, Any]

    @classmethod
    def from_record(cls, event: JobEventRecord) -> JobEvent:
        return cls(id=event.id, job_id=event.job_id, created_at=event.created_at,
                   kind=event.kind, data=event.data or {})
