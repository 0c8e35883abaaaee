"""Job rows -> the wire models of core/wire/jobs.py (the one place that knows both shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.wire import JobEvent, JobStatus, JobTracking, JobView
from jobs.records import JobEventRecord, JobRecord


def job_view(job: JobRecord) -> JobView:
    """What GET /jobs/{id} returns (and what a webhook receives) for ``job``. A job that
    ended has no ETA, whatever its last progress row said (a cancel keeps it)."""
    status = JobStatus(job.status)
    return JobView(
        id=job.id, task=job.task, status=status,
        dataset_id=job.dataset_id, base=job.base, target_model=job.target_model,
        hyperparameters=job.hyperparameters or {}, auto_activate=job.auto_activate,
        epoch=job.epoch, total_epochs=job.total_epochs, step=job.step,
        total_steps=job.total_steps, losses=job.losses, val_metrics=job.val_metrics,
        eta_seconds=None if status.is_terminal else job.eta_seconds,
        result_version=job.result_version,
        published_epoch=job.published_epoch, published_metrics=job.published_metrics,
        activation_reason=job.activation_reason, resumed_from=job.resumed_from,
        activated=job.activated, error=job.error, cancel_requested=job.cancel_requested,
        attempts=job.attempts, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, updated_at=job.updated_at,
        tracking=_tracking(job.tracking),
    )


def _tracking(data: dict[str, Any] | None) -> JobTracking | None:
    """The recorded link, or None (also for a row a newer worker wrote in another shape:
    the job view must always render)."""
    if not data:
        return None
    try:
        return JobTracking.model_validate(data)
    except ValidationError:
        return None


def job_event(event: JobEventRecord) -> JobEvent:
    return JobEvent(id=event.id, job_id=event.job_id, created_at=event.created_at,
                    kind=event.kind, data=event.data or {})
