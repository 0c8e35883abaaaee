"""Response shapes. JSON answers are plain dicts typed with TypedDicts (so a field a newer
server adds is simply there); image answers are ``ImageResult``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

Task = Literal["cartoonize", "matte", "classify", "generate", "autoencode"]
JobStatus = Literal["queued", "running", "exporting", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class ImageResult:
    """An image the server made, and which version made it."""

    content: bytes
    media_type: str
    model_version: str | None = field(default=None)  # X-Model-Version: "model@n"
    seed: int | None = None  # X-Seed (generate, autoencode sample)
    latent_distribution: str | None = None  # X-Latent-Distribution (autoencode sample)

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.content)
        return out


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
    task: Task
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


class ActivateResponse(TypedDict):
    name: str
    active: int
    previous: int | None


class DatasetMeta(TypedDict):
    id: str
    task: Task
    name: str
    bytes: int
    filename: str
    synthetic: bool
    counts: dict[str, int]
    created_at: str


class IngestResult(TypedDict):
    meta: DatasetMeta
    report: dict[str, Any]  # the intake report: can_train, problems, warnings, counts, ...


class JobView(TypedDict):
    id: str
    task: Task
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
    activated: bool
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


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


class ModelReadiness(TypedDict):
    name: str
    task: Task | None
    active_version: int | None
    loaded_version: int | None
    providers: list[str]
    ready: bool
    error: str | None


class Readiness(TypedDict):
    ready: bool
    models: list[ModelReadiness]


class FinetuneRequest(TypedDict):
    task: Task
    dataset_id: str
    base: str
    target_model: str
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
        return self.job["status"] in TERMINAL_STATUSES


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
