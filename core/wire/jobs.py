"""Fine-tune jobs on the wire: the request, the job as shown (and sent to webhooks), its
events, metrics and samples, and the status every process shares (the worker reads
``FinetuneRequest`` and ``JobStatus`` too)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StrictBool, model_validator

from core.task_names import TaskName


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    EXPORTING = "exporting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """A worker holds the job (its heartbeat must stay fresh)."""
        return self in ACTIVE


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.EXPORTING})


# The largest list offset a request may ask for: far beyond any real history, and inside
# every database's 64-bit integers (a bigger one was a 500 from the driver).
MAX_OFFSET = 10**9
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
BASE_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]{0,62})(?:@(?P<version>[0-9]+))?$")


def _optional_string(schema: dict[str, Any]) -> None:
    """The schema of a ``str`` field that a client may leave out or send as null (a
    validator fills it in before the field is checked)."""
    string = {key: schema.pop(key) for key in ("type", "pattern") if key in schema}
    schema["anyOf"] = [string, {"type": "null"}]
    schema["default"] = None


class FinetuneRequest(BaseModel):
    """POST /jobs/finetune body."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName
    dataset_id: str = Field(pattern=NAME_PATTERN)
    base: str = Field(
        pattern=BASE_RE.pattern,
        description="'model' (its active version), 'model@n', or an architecture name"
        " to train from scratch",
    )
    target_model: str = Field(
        None, pattern=NAME_PATTERN,  # type: ignore[assignment]  # _default_target fills it
        description="the model line to publish to; left out or null: the base's model name"
        " (`faces-ae` for `faces-ae@2`), as `toonforge finetune` defaults `--target`",
        json_schema_extra=_optional_string)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    auto_activate: StrictBool = Field(
        False, description="activate the new version when it is at least as good as the active"
    )
    webhook_url: HttpUrl | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("target_model") is None \
                and isinstance(data.get("base"), str):
            return {**data, "target_model": data["base"].partition("@")[0]}
        return data


class JobTracking(BaseModel):
    """The job's experiment-tracking run (docs/JOBS.md "Tracking")."""

    mlflow_run_id: str = Field(description="the MLflow run the job logs to")
    mlflow_experiment_id: str = Field(description="the run's MLflow experiment")
    mlflow_run_url: str | None = Field(
        None, description="the run's page in the MLflow UI (null when the tracking URI is"
        " not an http(s) server)")


class JobView(BaseModel):
    """What GET /jobs/{id} returns (and what a webhook receives)."""

    id: str
    task: TaskName
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
    published_epoch: int | None = Field(
        None, description="the epoch whose weights were published (the best by the task's"
        " gate metric)")
    published_metrics: dict[str, float | None] | None = Field(
        None, description="validation metrics of the published weights")
    activation_reason: str | None = Field(
        None, description="why the published version did or did not become active")
    resumed_from: str | None = Field(
        None, description="the cancelled or failed job whose checkpoint this job continues")
    activated: bool
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    tracking: JobTracking | None = Field(
        None, description="the job's MLflow run, once the worker opened it; null when the"
        " worker tracks no experiments (or could not reach the tracking server)")


class JobEvent(BaseModel):
    """One entry of a job's event log (a metrics point, a status change, a sample, a log line)."""

    id: int
    job_id: str
    created_at: datetime
    kind: str
    data: dict[str, Any]


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    jobs: list[JobView]
    total: int = Field(description="jobs matching the filters, on every page")
    limit: int
    offset: int


class MetricPoint(BaseModel):
    """The state of a job at the end of one epoch."""

    epoch: int
    step: int
    losses: dict[str, float | None] = Field(description="mean training losses of the epoch")
    val_metrics: dict[str, float | None] = Field(description="validation metrics after it")
    at: datetime


class JobMetrics(BaseModel):
    job_id: str
    status: JobStatus
    points: list[MetricPoint] = Field(description="one per completed epoch, in order")


class SampleInfo(BaseModel):
    name: str
    epoch: int | None
    bytes: int
    url: str = Field(description="where GET answers the PNG")
