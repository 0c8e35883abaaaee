"""The wire contract: every HTTP request and response model of the API, in one module.

Pure pydantic: no ORM, no store or network I/O. The API validates with these, the OpenAPI
document is generated from them, the worker reads ``FinetuneRequest`` and ``JobStatus``,
and the SDK's types are checked field by field against the generated document
(tests/sdk/test_wire_contract.py). Per-task hyper-parameters are a union keyed on ``task``
in the document (service/openapi_docs.py builds it from the task registry).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from core.task_names import TaskName


# ---------------------------------------------------------------------------- job status
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


# ---------------------------------------------------------------------------- inference
SEED_MAX = 2**63 - 1


class ModelChoice(BaseModel):
    """Which model and version serve the request."""

    model: str | None = Field(None, description="Model name; the task's default when absent.")
    version: int | None = Field(
        None, ge=1, description="Version number; the model's active version when absent."
    )
    # which graphs run; X-Model-Precision names the one that did.
    precision: Literal["fp32", "int8"] | None = Field(
        None, description="fp32, or int8 (the version's INT8 variant, kept only when it"
        " passed its fidelity gate; 409 precision_unavailable for a version without one)."
        " Absent: the server's default_precision (auto: int8 where the variant passed)."
    )


class GeneratedImage(BaseModel):
    png_base64: str
    score: float | None = None


class ImagesResponse(BaseModel):
    model: str
    version: int
    seed: int | None = None
    images: list[GeneratedImage]


class ModelInfo(BaseModel):
    name: str
    task: TaskName
    versions: list[int]
    active: int | None
    is_default: bool


class VersionSummary(BaseModel):
    version: int
    arch: str
    created_at: str
    description: str
    parity_passed: bool
    source: str
    parent: str | None
    metrics: dict[str, Any]


class ModelDetail(ModelInfo):
    loaded_version: int | None
    version_summaries: list[VersionSummary] = Field(
        description="one per version whose manifest reads")
    corrupt_versions: list[int] = Field(
        description="versions whose manifest.json cannot be read: they cannot serve or"
        " become active (409 version_corrupt)")
    rollback_target: int | None = Field(
        None, description="the version POST /models/{name}/rollback would activate (the"
        " activation history replayed); null: there is nothing to roll back to (it answers"
        " 409)")


class ActivateRequest(BaseModel):
    # Strict: a JSON body's true is not version 1 (lax pydantic would coerce it).
    version: StrictInt = Field(ge=1)


class ActivateResponse(BaseModel):
    name: str
    active: int
    previous: int | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelReadiness(BaseModel):
    name: str
    task: TaskName | None
    active_version: int | None = Field(description="the version the store's pointer names")
    loaded_version: int | None = Field(
        description="the version this process serves (null: none); another than"
        " active_version when that one cannot load (fallback)")
    providers: list[str]
    ready: bool = Field(description="serves a version (or has no active version at all)")
    fallback: bool = Field(
        description="serves the last good version because the active one cannot load"
        " (error says why)")
    error: str | None = Field(description="why the active version could not be loaded")


class Readiness(BaseModel):
    ready: bool = Field(description="every model serves a version (the answer is 200);"
                        " false when one serves nothing (503)")
    models: list[ModelReadiness]
    replica: str = Field(description="which API replica answered (TOONFORGE_REPLICA_ID, else"
                         " host:pid)")
    reload: ReloadStatus  # defined in the reload section at the end of this module


# ---------------------------------------------------------------------------- jobs
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


# ---- access: API keys over HTTP (docs/SECURITY.md)
ApiScope = Literal["infer", "train", "admin"]


class KeyLimitsBody(BaseModel):
    """A key's own limits; null (or absent) takes the server's setting, 0 means no limit."""

    model_config = ConfigDict(extra="forbid")

    # Strict types: false must not be stored as 0 (= no limit), nor "5" as 5.
    rps: StrictFloat | None = Field(None, ge=0,
                                    description="requests per second (bucket refill)")
    burst: StrictInt | None = Field(None, ge=1, le=1_000_000, description="bucket size")
    max_running_jobs: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_queued_jobs: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_dataset_bytes: StrictInt | None = Field(None, ge=0, le=2**62)
    max_dataset_files: StrictInt | None = Field(None, ge=0, le=2**31 - 1)


# The key-name rule as a schema pattern (jobs/keys.py checks str.isprintable(), which also
# refuses a few rarer invisible characters).
KEY_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="who or what uses the key:"
                      " printable characters, at least one that is not a space (the server"
                      " strips surrounding spaces)",
                      json_schema_extra={"pattern": KEY_NAME_PATTERN})
    scopes: list[ApiScope] = Field(min_length=1, max_length=3,
                                   description="admin grants train and infer too")
    limits: KeyLimitsBody = Field(default_factory=KeyLimitsBody)


class KeyView(BaseModel):
    """An API key as listed (never its secret)."""

    id: str = Field(description="the key's id: the <key_id> of tf_<key_id>_<secret>")
    name: str
    scopes: list[ApiScope]
    created_at: datetime
    revoked_at: datetime | None
    limits: KeyLimitsBody


class KeyCreated(KeyView):
    key: str = Field(description="the key itself, shown only in this answer")


# ---- sweeps (jobs/sweeps.py, docs/JOBS.md "Sweeps")
class SweepRequest(BaseModel):
    """POST /sweeps body: a base job and the hyper-parameter values to try, as a grid
    (every combination) or as an explicit list of points; exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    base: FinetuneRequest = Field(description="the job every point starts from; each point's"
                                  " values replace its hyperparameters of the same name")
    # The limits below are the server's own checks (jobs/sweeps.expand), stated in the
    # schema; the count's bound is the setting sweep_max_points (16 by default, 1000 at most).
    grid: dict[str, list[Any]] | None = Field(
        None, description="hyper-parameter -> values: one point per combination (cartesian"
        " product, keys in the order given); exactly one of grid and points; at least one"
        " hyper-parameter, each with at least one value; the product of the list lengths is"
        " at most the server's sweep_max_points (default 16)",
        json_schema_extra={"minProperties": 1,
                           "additionalProperties": {"type": "array", "minItems": 1}})
    points: list[dict[str, Any]] | None = Field(
        None, description="explicit points, each a hyper-parameter -> value object setting at"
        " least one; exactly one of grid and points; 1 to the server's sweep_max_points"
        " (default 16) of them",
        json_schema_extra={"minItems": 1, "maxItems": 1000,
                           "items": {"type": "object", "minProperties": 1}})
    auto_activate: StrictBool = Field(
        False, description="whether each point's job may activate its version (base's"
        " auto_activate is not used: N jobs activating one model line would race, and the"
        " last to pass the gate would win, not the best)")


class SweepEpoch(BaseModel):
    """The gate metric of one point's job at the end of one epoch."""

    epoch: int
    value: float | None


class SweepPoint(BaseModel):
    """One point of a sweep: its values and how its job stands."""

    index: int
    values: dict[str, Any] = Field(description="the swept hyper-parameters of this point")
    job_id: str
    status: JobStatus
    epoch: int = Field(description="epochs completed")
    total_epochs: int | None
    final_metric: float | None = Field(description="the gate metric after the last epoch")
    best_metric: float | None = Field(description="the best gate metric of any epoch")
    best_epoch: int | None
    published_metric: float | None = Field(description="the gate metric of the published"
                                           " weights")
    result_version: str | None = Field(description="'model@n' published by the job")
    activated: bool
    activation_reason: str | None
    error: str | None
    series: list[SweepEpoch] = Field(description="the gate metric per epoch, in order")


class SweepView(BaseModel):
    """GET /sweeps/{id}: the points side by side."""

    id: str
    created_at: datetime
    task: TaskName
    base: FinetuneRequest
    grid: dict[str, list[Any]] | None
    auto_activate: bool
    metric: str | None = Field(description="the task's gate metric (null: the task has none)")
    direction: Literal["min", "max"] | None = Field(description="which way is better")
    best_index: int | None = Field(description="the point with the best published (else best)"
                                   " metric so far")
    status_counts: dict[str, int] = Field(description="points per job status")
    points: list[SweepPoint]


class SweepSummary(BaseModel):
    """A sweep as listed (GET /sweeps)."""

    id: str
    created_at: datetime
    task: TaskName
    dataset_id: str
    target_model: str
    keys: list[str] = Field(description="the swept hyper-parameter names")
    job_ids: list[str]


class SweepPage(BaseModel):
    sweeps: list[SweepSummary]
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------------------- reload
class ReloadStatus(BaseModel):
    """How activations reach this replica (/readyz ``reload``)."""

    mode: Literal["redis", "poll"] = Field(
        description="redis: activations are announced on a Redis channel (the poll stays as"
        " the fallback); poll: only the poll of the store's pointers")
    connected: bool = Field(description="subscribed to the announcements now (false in poll"
                            " mode, and while Redis is unreachable: the poll still reloads)")


Readiness.model_rebuild()  # Readiness.reload names ReloadStatus, defined just above
