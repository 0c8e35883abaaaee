"""Response shapes. JSON answers are plain dicts typed with TypedDicts (so a field a newer
server adds is simply there); image answers are ``ImageResult``.

Each TypedDict that mirrors a schema of openapi/openapi.json has that schema's name and
fields; tests/sdk/test_wire_contract.py checks them field by field. A ``task`` field is a
``str``: the server's task registry is open (``Task`` names the built-in tasks).

Why one module of ~540 lines: it is the client's copy of the wire contract, one TypedDict
per schema, so it reads (and is checked) against openapi/openapi.json in one place; split
by resource, the shapes several resources share (``JobView``, ``FinetuneRequest``) would
have no obvious home.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

Task = Literal["cartoonize", "matte", "portrait", "classify", "generate", "autoencode"]
JobStatus = Literal["queued", "running", "exporting", "succeeded", "failed", "cancelled"]
# The statuses a job ends in: the one definition the clients and the CLI use.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# ?precision= of the inference calls (None: the server's default_precision).
Precision = Literal["fp32", "int8"]


def is_terminal(status: str) -> bool:
    """Whether a job in ``status`` has ended (succeeded, failed or cancelled)."""
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class ImageResult:
    """An image the server made, and which version made it."""

    content: bytes
    media_type: str
    model_version: str | None = field(default=None)  # X-Model-Version: "model@n"
    seed: int | None = None  # X-Seed (generate, autoencode sample)
    latent_distribution: str | None = None  # X-Latent-Distribution (autoencode sample)
    precision: str | None = None  # X-Model-Precision: "fp32" or "int8"
    faces_cartoonized: int | None = None  # X-Faces-Cartoonized (cartoonize)
    faces_found: int | None = None  # X-Faces-Found (cartoonize, when faces were searched)
    # portrait: every X-... header of the answer (X-Face-Found, X-Crop-Box, ...), lower-case
    headers: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.content)
        return out


class Style(TypedDict):
    """A style ``/cartoonize?style=`` serves (``GET /styles``)."""

    name: str
    model: str
    version: int
    compound: bool
    preview: str | None  # a small JPEG as a data URL
    licence: str
    source: str


class StyleList(TypedDict):
    styles: list[Style]


class Prediction(TypedDict):
    label: str
    score: float


class ClassifyResponse(TypedDict):
    model: str
    version: int
    predictions: list[Prediction]


class GeneratedImage(TypedDict):
    png_base64: str
    score: float | None


class ImagesResponse(TypedDict):
    model: str
    version: int
    seed: int | None
    images: list[GeneratedImage]


class ModelInfo(TypedDict):
    name: str
    task: str
    versions: list[int]
    active: int | None
    is_default: bool


class VersionSummary(TypedDict):
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
    version_summaries: list[VersionSummary]
    corrupt_versions: list[int]
    rollback_target: int | None  # what rollback_model would activate; None: nothing


class ActivateResponse(TypedDict):
    name: str
    active: int
    previous: int | None


class DatasetMeta(TypedDict):
    id: str
    task: str
    name: str
    bytes: int
    filename: str
    synthetic: bool
    counts: dict[str, int]
    created_at: str
    owner: str | None  # the API key id that uploaded it (None: anonymous)


class SkippedFile(TypedDict):
    path: str
    reason: str


class SizeStats(TypedDict):
    min_width: int
    max_width: int
    mean_width: float
    min_height: int
    max_height: int
    mean_height: float


class IntakeReport(TypedDict):
    """What the server found in an uploaded dataset (``can_train`` False says why not)."""

    task: str
    can_train: bool
    problems: list[str]
    warnings: list[str]
    counts: dict[str, int]
    class_counts: dict[str, dict[str, int]] | None
    files_seen: int
    files_accepted: int
    skipped: list[SkippedFile]  # the first few; files_skipped counts all
    files_skipped: int
    files_ignored: int  # never extracted: not images, or outside the layout
    ignored: list[str]  # a sample of their names
    truncated: bool  # a list holds only its first entries
    stripped_folder: str | None
    split_source: Literal["given", "auto"]
    image_size: SizeStats | None


class IngestResult(TypedDict):
    meta: DatasetMeta
    report: IntakeReport


class JobTracking(TypedDict):
    """The job's MLflow run: ``mlflow_run_url`` is its page in the MLflow UI (None when the
    server's tracking URI is not an http(s) server)."""

    mlflow_run_id: str
    mlflow_experiment_id: str
    mlflow_run_url: str | None


class JobView(TypedDict):
    id: str
    task: str
    status: JobStatus
    dataset_id: str
    base: str
    target_model: str
    hyperparameters: dict[str, Any]
    auto_activate: bool
    epoch: int
    total_epochs: int | None
    step: int
    total_steps: int | None
    losses: dict[str, float | None] | None
    val_metrics: dict[str, float | None] | None
    eta_seconds: float | None
    result_version: str | None
    published_epoch: int | None
    published_metrics: dict[str, float | None] | None
    activation_reason: str | None
    resumed_from: str | None
    activated: bool
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    tracking: JobTracking | None  # None: the job logs no experiment-tracking run


class JobPage(TypedDict):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class JobEvent(TypedDict):
    """One server-sent event of ``GET /jobs/{id}/events``."""

    id: int
    job_id: str
    created_at: str
    kind: str  # progress | status | sample | log
    data: dict[str, Any]


class MetricPoint(TypedDict):
    epoch: int
    step: int
    losses: dict[str, float | None]
    val_metrics: dict[str, float | None]
    at: str


class JobMetrics(TypedDict):
    job_id: str
    status: JobStatus
    points: list[MetricPoint]


class SampleInfo(TypedDict):
    name: str
    epoch: int | None
    bytes: int
    url: str


class Health(TypedDict):
    status: str


class KeyLimits(TypedDict):
    """A key's own limits (None: the server's setting; 0: no limit)."""

    rps: float | None
    burst: int | None
    max_running_jobs: int | None
    max_queued_jobs: int | None
    max_dataset_bytes: int | None
    max_dataset_files: int | None


class KeyView(TypedDict):
    """An API key as listed (never its secret)."""

    id: str
    name: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None
    limits: KeyLimits


class KeyCreated(KeyView):
    key: str  # the key itself: shown only in the answer to create_key


class ModelReadiness(TypedDict):
    name: str
    task: str | None
    active_version: int | None
    loaded_version: int | None
    providers: list[str]
    ready: bool
    fallback: bool  # serving the last good version: the active one cannot load (error)
    error: str | None


class ReloadStatus(TypedDict):
    mode: Literal["redis", "poll"]  # redis: announced activations (+ the poll); poll only
    connected: bool  # subscribed to the announcements now


class Readiness(TypedDict):
    ready: bool
    models: list[ModelReadiness]
    replica: str  # the API replica that answered
    reload: ReloadStatus


# ------------------------------------------------------------------ manifests


class TensorSpec(TypedDict):
    name: str
    shape: list[int | str]
    dtype: str


class GraphSpec(TypedDict):
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int


class FileEntry(TypedDict):
    sha256: str
    bytes: int


class ParityReport(TypedDict):
    passed: bool
    tolerance: float  # the absolute term (atol) of the bound
    rule: Literal["absolute", "relative"]  # relative: error <= atol + rtol * max|output|
    rtol: float
    max_abs_error: dict[str, float]
    # output -> {max_abs_error, scale, atol, rtol, bound, passed}
    outputs: dict[str, dict[str, Any]]
    inputs: str
    detail: str
    torch_version: str
    onnxruntime_version: str


class Lineage(TypedDict):
    source: str  # import | finetune | scratch
    parent: str | None
    checkpoint: dict[str, str]
    dataset: str | None
    job_id: str | None
    hyperparameters: dict[str, Any]
    synthetic_data: bool


class VariantRecord(TypedDict):
    """A version's INT8 variant (``Manifest.variants["int8"]``): kept or refused, and why."""

    precision: str  # int8
    passed: bool
    reason: str
    graphs: dict[str, str]  # graph role -> file (empty when refused)
    fidelity: dict[str, float]  # "role.metric" -> value measured against fp32
    limits: dict[str, str]  # metric -> bound, e.g. "<= 0.00392"
    speedup: float | None  # fp32 / int8 time, main graph, batch 1, on the publishing host
    fp32_ms: float | None
    int8_ms: float | None
    calibration: str
    calibration_inputs: int
    held_out_inputs: int
    method: str
    onnxruntime_version: str
    seconds: float


class Manifest(TypedDict):
    """One model version's manifest (``GET /models/{name}/versions/{version}``)."""

    schema_version: int
    model: str
    version: int
    task: str
    arch: str
    description: str
    created_at: str
    graphs: dict[str, GraphSpec]
    preprocessing: dict[str, Any]
    labels: list[str] | None
    metrics: dict[str, Any]
    parity: ParityReport
    lineage: Lineage
    files: dict[str, FileEntry]
    extra: dict[str, Any]
    variants: dict[str, VariantRecord]  # precision -> variant; {} without one


# ------------------------------------------------------------------ errors, request bodies


class ErrorBody(TypedDict):
    code: str
    message: str
    details: dict[str, Any] | None


class ErrorEnvelope(TypedDict):
    """What every non-2xx answer carries (``errors.error_from_response`` reads it)."""

    error: ErrorBody


class ActivateRequest(TypedDict):
    version: int


class GenerateBody(TypedDict, total=False):
    n: int | None
    seed: int | None
    rank_by_discriminator: bool
    oversample: int
    format: Literal["grid", "json"]
    latents: list[list[float]] | None


class FinetuneRequest(TypedDict):
    task: str
    dataset_id: str
    base: str
    target_model: NotRequired[str | None]  # left out: the base's model name
    hyperparameters: NotRequired[dict[str, Any]]
    auto_activate: NotRequired[bool]
    webhook_url: NotRequired[str | None]


# Fields of a progress event that are columns of the job (jobs/repository.py ProgressUpdate).
_PROGRESS_FIELDS = ("epoch", "total_epochs", "step", "total_steps", "losses", "val_metrics",
                    "eta_seconds")


@dataclass(frozen=True)
class JobUpdate:
    """What ``wait_for_job`` hands ``on_progress``: the job as it stands now, and the event
    that moved it (``None`` when the update came from polling ``GET /jobs/{id}``)."""

    job: JobView
    event: JobEvent | None
    source: Literal["stream", "poll"]

    @property
    def status(self) -> str:
        return self.job["status"]

    @property
    def epoch(self) -> int:
        return self.job["epoch"]

    @property
    def total_epochs(self) -> int | None:
        return self.job["total_epochs"]

    @property
    def eta_seconds(self) -> float | None:
        return self.job["eta_seconds"]

    @property
    def loss(self) -> float | None:
        """The headline training loss: ``loss`` when the trainer reports one, else the first."""
        losses = self.job.get("losses") or {}
        if "loss" in losses:
            return losses["loss"]
        return next(iter(losses.values()), None)

    @property
    def finished(self) -> bool:
        return is_terminal(self.job["status"])


def apply_event(job: JobView, event: JobEvent) -> JobView:
    """The job after ``event`` (progress columns and status changes), as a new dict."""
    updated: dict[str, Any] = dict(job)
    data = event.get("data") or {}
    if event["kind"] == "progress":
        for name in _PROGRESS_FIELDS:
            if data.get(name) is not None:
                updated[name] = data[name]
    elif event["kind"] == "status" and isinstance(data.get("status"), str):
        updated["status"] = data["status"]
        if data.get("error"):
            updated["error"] = data["error"]
    return updated  # type: ignore[return-value]


# ---- sweeps: POST /sweeps, GET /sweeps, GET /sweeps/{id}
class SweepEpoch(TypedDict):
    epoch: int
    value: float | None


class SweepPoint(TypedDict):
    index: int
    values: dict[str, Any]
    job_id: str
    status: JobStatus
    epoch: int
    total_epochs: int | None
    final_metric: float | None
    best_metric: float | None
    best_epoch: int | None
    published_metric: float | None
    result_version: str | None
    activated: bool
    activation_reason: str | None
    error: str | None
    series: list[SweepEpoch]


class SweepView(TypedDict):
    id: str
    created_at: str
    task: str
    base: FinetuneRequest
    grid: dict[str, list[Any]] | None
    auto_activate: bool
    metric: str | None
    direction: Literal["min", "max"] | None
    best_index: int | None
    status_counts: dict[str, int]
    points: list[SweepPoint]


class SweepSummary(TypedDict):
    id: str
    created_at: str
    task: str
    dataset_id: str
    target_model: str
    keys: list[str]
    job_ids: list[str]


class SweepPage(TypedDict):
    sweeps: list[SweepSummary]
    total: int
    limit: int
    offset: int
