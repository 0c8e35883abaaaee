"""What a fine-tune job's tracking sends and where: the run's name, tags, parameters, epoch
points and outcome, and the sinks that send them (an MLflow run, TensorBoard event files).

The tracker that feeds them from the job, on its own thread, is in tracking.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from core.settings import Settings
from jobs.records import JobRecord
from tasks import CommonHyperparameters
from worker.training.trainers.context import ProgressEvent

log = logging.getLogger(__name__)

# MLflow's own limits on a parameter value and a tag value (characters), and on the
# parameters of one log_batch call.
PARAM_MAX_CHARS = 6000
TAG_MAX_CHARS = 5000
PARAMS_PER_BATCH = 100
# The MLflow client retries a failed request 7 times over ~4 minutes by default, which
# would hold the end of every job with an unreachable server that long; the worker's own
# defaults (an operator's MLFLOW_* environment wins). Telemetry is off unless asked for: a
# worker talks to its tracking server and to nothing else.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# The tags that say how a run's job ended (MlflowSink.finish).
OUTCOME_TAGS = frozenset({"final_status", "activated", "result_version", "activation_reason",
                          "error", "published_epoch"})
# MLflow run status per terminal job status.
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # safe inside a search filter
_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
_USERINFO = re.compile(r"//[^/\s@]+@")


# ---------------------------------------------------------------- what is tracked


@dataclass(frozen=True)
class JobInfo:
    """What a run is named, tagged and parameterised with."""

    id: str
    task: str
    target_model: str
    base: str
    dataset_id: str
    attempt: int
    resumed_from: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # recorded on the job row by an earlier attempt

    @classmethod
    def from_record(cls, job: JobRecord, hp: CommonHyperparameters | None = None) -> JobInfo:
        """``hp``: the job's validated hyper-parameters (``JobPlan.hp``), recorded with their
        defaults; None (a job whose task or hyper-parameters did not resolve): the row's."""
        params: Mapping[str, Any] = (hp.model_dump(mode="json") if hp is not None
                                     else dict(job.hyperparameters or {}))
        recorded = job.tracking or {}
        run_id = recorded.get("mlflow_run_id")
        return cls(id=job.id, task=job.task, target_model=job.target_model, base=job.base,
                   dataset_id=job.dataset_id, attempt=job.attempts,
                   resumed_from=job.resumed_from, params=flatten(params),
                   run_id=run_id if isinstance(run_id, str) else None)

    def tags(self) -> dict[str, str]:
        tags = {"task": self.task, "target_model": self.target_model, "base": self.base,
                "dataset_id": self.dataset_id, "job_id": self.id, "attempt": str(self.attempt)}
        if self.resumed_from:
            tags["resumed_from"] = self.resumed_from
        return tags


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    metrics: dict[str, float]  # train/<loss>, val/<metric>, lr/<optimizer>
    samples: list[Path]  # the tracker's own copies of the epoch's sample images


@dataclass(frozen=True)
class Outcome:
    """How the job ended."""

    status: str  # succeeded | failed | cancelled
    result_version: str | None = None
    activated: bool = False
    activation_reason: str | None = None
    error: str | None = None
    published_epoch: int | None = None
    published_metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_record(cls, job: JobRecord) -> Outcome:
        metrics = {k: float(v) for k, v in (job.published_metrics or {}).items()
                   if isinstance(v, int | float)}
        return cls(status=job.status, result_version=job.result_version,
                   activated=bool(job.activated), activation_reason=job.activation_reason,
                   error=job.error, published_epoch=job.published_epoch,
                   published_metrics=metrics)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys, every value as text (MLflow parameters are text)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        flat[name] = text[:PARAM_MAX_CHARS]
    return flat


def epoch_metrics(event: ProgressEvent) -> dict[str, float]:
    """The epoch's train losses, validation metrics and learning rates, by tracked name."""
    metrics: dict[str, float] = {}
    for group, values in (("train", event.losses), ("val", event.val_metrics),
                          ("lr", event.lr)):
        for key, value in (values or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metrics[f"{group}/{_METRIC_KEY_UNSAFE.sub('_', str(key))}"] = float(value)
    return metrics


def run_url(base: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI at ``base``; None unless ``base`` is an http(s) URL.
    Credentials in the URL are left out: the link is shown to every caller of the job."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.netloc.rpartition("@")[2]
    return (f"{parts.scheme}://{host}{parts.path.rstrip('/')}"
            f"/#/experiments/{experiment_id}/runs/{run_id}")


# ---------------------------------------------------------------- sinks


class Sink(ABC):
    """One tracking backend. Its calls run on the tracker's thread, one at a time; any
    exception switches the sink off for the rest of the job."""

    name: ClassVar[str]
    uses_samples: ClassVar[bool] = False

    @abstractmethod
    def start(self, job: JobInfo) -> dict[str, Any] | None:
        """Open (or re-open) the job's run; returns what the job row should link to."""

    @abstractmethod
    def epoch(self, point: EpochPoint) -> None:
        """Log one finished epoch."""

    @abstractmethod
    def finish(self, outcome: Outcome | None) -> None:
        """Close the run: ``outcome`` is how the job ended, None when it is not over (it
        went back to the queue, or another worker took it): the run stays open for it."""


class MlflowSink(Sink):
    """A run on an MLflow tracking server, through the ``mlflow`` client library."""

    name = "mlflow"
    uses_samples = True

    def __init__(self, tracking_uri: str, experiment: str, ui_url: str | None = None) -> None:
        for key, value in MLFLOW_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient  # optional dependency: toonforge[tracking]

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment, self.ui_url = experiment, ui_url or tracking_uri
        self.run_id: str | None = None

    def start(self, job: JobInfo) -> dict[str, Any]:
        from mlflow.entities import Param, RunStatus, RunTag

        run = self._find(job)
        if run is None:
            run = self.client.create_run(self._experiment_id(), run_name=job.id,
                                         tags={**job.tags(), "jobs": job.id})
        elif run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            # Continued after an end (a resumed job): the old end no longer describes it.
            self.client.update_run(run.info.run_id, status="RUNNING")
            for key in OUTCOME_TAGS & run.data.tags.keys():
                self.client.delete_tag(run.info.run_id, key)
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        self.run_id = run_id
        chain = run.data.tags.get("jobs", "").split()
        tags = {**job.tags(), "jobs": " ".join([*chain, job.id] if job.id not in chain
                                               else chain)}
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        # A parameter cannot change once logged: a continued run keeps the first values.
        new = [Param(k, v) for k, v in job.params.items() if k not in run.data.params]
        for i in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=new[i:i + PARAMS_PER_BATCH])
        return {"mlflow_run_id": run_id, "mlflow_experiment_id": experiment_id,
                "mlflow_run_url": run_url(self.ui_url, experiment_id, run_id)}

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except Exception:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def _find(self, job: JobInfo) -> Any:
        """The job's run from an earlier attempt, or the run of the job it resumes."""
        if job.run_id:
            try:
                run = self.client.get_run(job.run_id)
                if run.info.lifecycle_stage == "active":
                    return run
            except Exception as exc:  # deleted on the server: search, or start afresh
                log.info("job %s: MLflow run %s is gone (%s)", job.id, job.run_id,
                         short(exc))
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return None
        for job_id in (job.id, job.resumed_from):
            if not job_id or not _JOB_ID.match(job_id):
                continue
            runs = self.client.search_runs([found.experiment_id],
                                           f"tags.jobs LIKE '%{job_id}%'", max_results=1,
                                           order_by=["attributes.start_time DESC"])
            if runs:
                return runs[0]
        return None

    def epoch(self, point: EpochPoint) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, v, now, point.epoch) for k, v in point.metrics.items()])
        for path in point.samples:
            self.client.log_artifact(self.run_id, str(path), "samples")

    def finish(self, outcome: Outcome | None) -> None:
        from mlflow.entities import Metric, RunTag

        if outcome is None or self.run_id is None:
            return
        tags = {"final_status": outcome.status, "activated": str(outcome.activated).lower()}
        for key in ("result_version", "activation_reason", "error"):
            value = getattr(outcome, key)
            if value:
                tags[key] = str(value)[:TAG_MAX_CHARS]
        if outcome.published_epoch is not None:
            tags["published_epoch"] = str(outcome.published_epoch)
        now = int(time.time() * 1000)
        metrics = [Metric(f"published/{k}", v, now, outcome.published_epoch or 0)
                   for k, v in outcome.published_metrics.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics,
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(self.run_id, RUN_STATUS.get(outcome.status, "FINISHED"))


class TensorBoardSink(Sink):
    """Event files under ``<dir>/<job_id>/`` (torch.utils.tensorboard's SummaryWriter). A
    redelivered job adds an event file beside its earlier ones; TensorBoard merges them."""

    name = "tensorboard"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.writer: Any = None

    def start(self, job: JobInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.root / job.id))
        return None

    def epoch(self, point: EpochPoint) -> None:
        for key, value in point.metrics.items():
            self.writer.add_scalar(key, value, point.epoch)
        self.writer.flush()

    def finish(self, outcome: Outcome | None) -> None:
        if self.writer is None:
            return
        if outcome is not None:
            self.writer.add_text("final_status", outcome.status)
        self.writer.close()


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks ``settings`` ask for; one that cannot be built (mlflow not installed) is
    left out with a warning."""
    sinks: list[Sink] = []
    makers: list[tuple[str, Callable[[], Sink]]] = []
    if settings.mlflow_tracking_uri:
        uri = settings.mlflow_tracking_uri
        makers.append(("mlflow", lambda: MlflowSink(uri, settings.mlflow_experiment,
                                                    settings.mlflow_ui_url)))
    if settings.tensorboard_dir is not None:
        root = Path(settings.tensorboard_dir)
        makers.append(("tensorboard", lambda: TensorBoardSink(root)))
    for name, make in makers:
        try:
            sinks.append(make())
        except Exception as exc:
            log.warning("%s tracking is off: %s", name, short(exc))
    return sinks


def short(exc: BaseException, limit: int = 300) -> str:
    """One line of an exception for a warning (MLflow's messages carry whole responses),
    without the user and password a URL in it may carry."""
    text = _USERINFO.sub("//", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
