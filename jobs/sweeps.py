"""Hyper-parameter sweeps: one request, one job per point, compared side by side.

A sweep is a base fine-tune request and the values to try, either a ``grid`` (every
combination, keys in the order given) or an explicit list of ``points``. Each point's values
replace the base's hyper-parameters of the same name, and every point is validated with the
task's hyper-parameter model and checked against the store (dataset, base, target) BEFORE
any job exists: a bad point is a 422 naming the point and the field, and nothing is made.

All or nothing: the caller's quota is checked for the whole sweep first (``admit_all``,
room for N jobs), then the jobs are created one by one through the ordinary path
(``jobs.queue.create_and_enqueue``, each with the per-job quota check too). If one of them
still fails (the broker stops answering half way, a concurrent request took the last quota
place) the jobs already made are cancelled (queued jobs are cancelled at once: no worker
runs them) and the error is raised, so no sweep is recorded with part of its points.

Every point publishes to the base's ``target_model`` (its versions tell the points apart,
and the comparison names each one's version). ``auto_activate`` is the sweep's own field,
false by default, whatever the base says: N jobs activating one model line would race, and
the last to pass the gate would win rather than the best; pick the winner from the
comparison and activate it (``POST /models/{name}/activate``).

The comparison reads what the job layer records: the job row (status, epochs, published
version and metrics, activation reason) and its epoch-end progress events (the per-epoch
gate metric: final and best). Torch-free; the table is registered on the job tables' Base
(``jobs/db.py`` imports this module so ``create_schema`` creates it).
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.wire import (
    FinetuneRequest,
    JobStatus,
    MetricPoint,
    SweepEpoch,
    SweepPoint,
    SweepRequest,
    SweepSummary,
    SweepView,
)
from jobs.errors import IdempotencyConflict, InvalidJobRequest, JobError, JobNotFound
from jobs.records import (
    Base,
    JobRecord,
    UTCDateTime,
    json_safe,
    scoped_idempotency_key,
    utcnow,
)
from jobs.request_checks import Stores, check_references, validate_hyperparameters
from tasks import get_task

log = logging.getLogger(__name__)


class SweepNotFound(JobError):
    code = "sweep_not_found"
    http_status = 404


class SweepRecord(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The API key that created the sweep (None: anonymous open access).
    owner_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    task: Mapped[str] = mapped_column(String(32))
    # The base FinetuneRequest as sent (JSON), the grid (None for a list of points), each
    # point's swept values, and the job of each point (same order).
    base: Mapped[dict[str, Any]] = mapped_column(JSON)
    grid: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    job_ids: Mapped[list[str]] = mapped_column(JSON)
    auto_activate: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True,
                                                        nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))


# ----------------------------------------------------------------------------- points


def _point_error(where: list[Any], message: str) -> InvalidJobRequest:
    return InvalidJobRequest(message, [{"loc": ["body", *where], "msg": message,
                                     "type": "value_error"}])


def expand(request: SweepRequest, max_points: int) -> list[dict[str, Any]]:
    """The points of ``request`` (the grid's combinations, or its list), at most
    ``max_points`` of them; the count is checked before a grid is expanded."""
    if (request.grid is None) == (request.points is None):
        raise _point_error(["grid"], "give exactly one of grid (every combination) and"
                                     " points (an explicit list)")
    if request.grid is not None:
        if not request.grid:
            raise _point_error(["grid"], "the grid names no hyper-parameter")
        for key, values in request.grid.items():
            if not values:
                raise _point_error(["grid", key], f"grid value list of {key!r} is empty")
        count = math.prod(len(v) for v in request.grid.values())
        if count > max_points:
            raise _point_error(["grid"], f"the grid has {count} points; a sweep may have at"
                               f" most {max_points} (setting sweep_max_points)")
        keys = list(request.grid)
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(request.grid[k] for k in keys))]
    points = request.points or []
    if not points:
        raise _point_error(["points"], "the list of points is empty")
    if len(points) > max_points:
        raise _point_error(["points"], f"{len(points)} points given; a sweep may have at most"
                           f" {max_points} (setting sweep_max_points)")
    for i, point in enumerate(points):
        if not point:
            raise _point_error(["points", i], f"point {i} sets no hyper-parameter")
    return [dict(p) for p in points]


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def point_requests(request: SweepRequest, points: Sequence[dict[str, Any]],
                   stores: Stores | None) -> list[FinetuneRequest]:
    """One FinetuneRequest per point (base + values, the sweep's auto_activate), each
    validated; the first bad point raises ``InvalidJobRequest`` located at it
    (``["body", "points", i, field]``, or ``["body", "grid", field]`` for a grid)."""
    base = request.base
    made: list[FinetuneRequest] = []
    for i, values in enumerate(points):
        hyper = {**base.hyperparameters, **values}
        candidate = base.model_copy(update={"hyperparameters": hyper,
                                            "auto_activate": request.auto_activate})
        try:
            validate_hyperparameters(base.task, hyper)
            if stores is not None:
                candidate = check_references(candidate, stores)
        except InvalidJobRequest as exc:
            raise _located(exc, i, values, request.grid is not None) from None
        made.append(candidate)
    return made


def _located(exc: InvalidJobRequest, index: int, values: dict[str, Any], grid: bool
             ) -> InvalidJobRequest:
    errors = []
    for err in exc.errors:
        loc = list(err["loc"][1:])  # drop "body"
        if loc and loc[0] == "hyperparameters" and len(loc) > 1 and loc[1] in values:
            loc = ["grid", *loc[1:]] if grid else ["points", index, *loc[1:]]
        errors.append({**err, "loc": ["body", *loc],
                       "msg": f"point {index} ({_describe(values)}): {err['msg']}"})
    return InvalidJobRequest(str(exc), errors)


# ----------------------------------------------------------------------------- records


class SweepRepository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, record: SweepRecord) -> SweepRecord:
        """Insert; a concurrent insert of the same idempotency key raises IntegrityError."""
        with self._sessions() as session:
            session.add(record)
            session.commit()
        return record

    def get(self, sweep_id: str) -> SweepRecord:
        with self._sessions() as session:
            record = session.get(SweepRecord, sweep_id)
        if record is None:
            raise SweepNotFound(f"sweep {sweep_id!r} does not exist")
        return record

    def by_key(self, key: str, digest: str, owner_key: str | None = None
               ) -> SweepRecord | None:
        """The sweep ``key`` made for this owner (keys are scoped per API key)."""
        stored = scoped_idempotency_key(key, owner_key)
        with self._sessions() as session:
            record = session.scalars(select(SweepRecord).where(
                SweepRecord.idempotency_key == stored)).first()
        if record is not None and record.request_hash != digest:
            raise IdempotencyConflict(key, f"of sweep {record.id}")
        return record

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(SweepRecord)) or 0)

    def list(self, limit: int = 50, offset: int = 0) -> builtins.list[SweepRecord]:
        """Sweeps, newest first."""
        stmt = (select(SweepRecord).order_by(SweepRecord.created_at.desc(),
                                             SweepRecord.id.desc())
                .limit(limit).offset(offset))
        with self._sessions() as session:
            return builtins.list(session.scalars(stmt))


def sweep_hash(body: dict[str, Any]) -> str:
    """A stable digest of the whole sweep body, for idempotency-key conflicts."""
    return hashlib.sha256(json.dumps(json_safe(body), sort_keys=True).encode()).hexdigest()


CreateJob = Callable[[FinetuneRequest], JobRecord]


def create_sweep(sweeps: SweepRepository, request: SweepRequest, *,
                 create_job: CreateJob, cancel_job: Callable[[str], Any],
                 stores: Stores | None, max_points: int, owner_key: str | None = None,
                 admit_all: Callable[[int], None] | None = None,
                 idempotency_key: str | None = None) -> tuple[SweepRecord, bool]:
    """Check every point, check the quota for all of them, then create one job per point
    (``create_job``: the ordinary create-and-send path) and record the sweep; (sweep,
    created). A repeated idempotency key with the same body answers the sweep it made
    (created=False); with another body ``IdempotencyConflict``. On a failure after the
    first job, the jobs made so far are cancelled (``cancel_job``) and the error raised."""
    body = request.model_dump(mode="json")
    digest = sweep_hash(body)
    if idempotency_key is not None:
        existing = sweeps.by_key(idempotency_key, digest, owner_key)
        if existing is not None:
            return existing, False
    points = expand(request, max_points)
    requests = point_requests(request, points, stores)
    if admit_all is not None:
        admit_all(len(requests))
    made: list[str] = []
    try:
        for point in requests:
            made.append(create_job(point).id)
        record = SweepRecord(
            id=uuid.uuid4().hex, created_at=utcnow(), owner_key=owner_key,
            task=request.base.task, base=body["base"], grid=body["grid"],
            points=json_safe(points), job_ids=made, auto_activate=request.auto_activate,
            idempotency_key=scoped_idempotency_key(idempotency_key, owner_key),
            request_hash=digest)
        try:
            return sweeps.add(record), True
        except IntegrityError:
            if idempotency_key is None:
                raise
            winner = sweeps.by_key(idempotency_key, digest, owner_key)  # a concurrent twin won
            if winner is None:
                raise
            _cancel_all(made, cancel_job)
            return winner, False
    except BaseException:
        _cancel_all(made, cancel_job)
        raise


def _cancel_all(job_ids: Sequence[str], cancel_job: Callable[[str], Any]) -> None:
    for job_id in job_ids:
        try:
            cancel_job(job_id)
        except Exception:  # best effort: the job stays visible in GET /jobs
            log.exception("sweep rollback: could not cancel job %s", job_id)


# ----------------------------------------------------------------------------- comparison


def summary(record: SweepRecord) -> SweepSummary:
    keys = list(record.grid) if record.grid else list(dict.fromkeys(
        k for p in record.points for k in p))
    return SweepSummary(id=record.id, created_at=record.created_at, task=record.task,
                        dataset_id=record.base.get("dataset_id", ""),
                        target_model=record.base.get("target_model", ""), keys=keys,
                        job_ids=list(record.job_ids))


def _metric(values: dict[str, float | None] | None, name: str | None) -> float | None:
    if not values or name is None:
        return None
    value = values.get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def compare_point(index: int, values: dict[str, Any], job: JobRecord | None, job_id: str,
                  epochs: Sequence[MetricPoint], metric: str | None,
                  direction: str | None) -> SweepPoint:
    """One row of the comparison: final (last epoch) and best (by the gate's direction)
    validation metric, the published version and its metric, from the job's records."""
    series = [SweepEpoch(epoch=p.epoch, value=_metric(p.val_metrics, metric)) for p in epochs]
    measured = [(s.value, s.epoch) for s in series if s.value is not None]
    best: tuple[float, int] | None = None
    if measured and direction is not None:
        pick = min if direction == "min" else max
        best = pick(measured, key=lambda m: m[0])
    if job is None:  # deleted behind the sweep's back: say so rather than fail the view
        return SweepPoint(index=index, values=values, job_id=job_id,
                          status=JobStatus.CANCELLED, epoch=0, total_epochs=None,
                          final_metric=None, best_metric=None, best_epoch=None,
                          published_metric=None, result_version=None, activated=False,
                          activation_reason=None, error="the job no longer exists",
                          series=[])
    return SweepPoint(
        index=index, values=values, job_id=job.id, status=JobStatus(job.status),
        epoch=job.epoch, total_epochs=job.total_epochs,
        final_metric=series[-1].value if series else _metric(job.val_metrics, metric),
        best_metric=best[0] if best else None, best_epoch=best[1] if best else None,
        published_metric=_metric(job.published_metrics, metric),
        result_version=job.result_version, activated=job.activated,
        activation_reason=job.activation_reason, error=job.error, series=series)


def compare(record: SweepRecord, jobs: Sequence[JobRecord | None],
            epochs: Sequence[Sequence[MetricPoint]]) -> SweepView:
    """The sweep's points side by side, and which is best so far: by the published metric
    where a point published, else by its best epoch."""
    gate = get_task(record.task).gate
    metric = gate.metric if gate else None
    direction = gate.direction if gate else None
    rows = [compare_point(i, values, job, job_id, series, metric, direction)
            for i, (values, job, job_id, series) in enumerate(
                zip(record.points, jobs, record.job_ids, epochs, strict=True))]
    best_index: int | None = None
    if gate is not None:
        def score(row: SweepPoint) -> float | None:
            return row.published_metric if row.published_metric is not None else row.best_metric

        scored = [(s, r.index) for r in rows if (s := score(r)) is not None]
        if scored:
            pick = min if direction == "min" else max
            best_index = pick(scored, key=lambda m: m[0])[1]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status.value] = counts.get(row.status.value, 0) + 1
    return SweepView(id=record.id, created_at=record.created_at, task=record.task,
                     base=FinetuneRequest.model_validate(record.base), grid=record.grid,
                     auto_activate=record.auto_activate, metric=metric,
                     direction=direction, best_index=best_index, status_counts=counts,
                     points=rows)


__all__ = ["JobNotFound", "SweepNotFound", "SweepRecord", "SweepRepository", "compare",
           "create_sweep", "expand", "point_requests", "summary"]
