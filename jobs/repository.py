"""Job records: create, read, and change them atomically across processes.

Every state change is one ``UPDATE jobs ... WHERE id = :id AND status IN (...)`` (plus a
worker-id guard where a worker acts), so when two processes race exactly one wins and the
other learns it from the row count. Reads and writes use short transactions of their own.

Longer than most modules (~520 lines) on purpose: it is the one class that writes the jobs
tables, so every compare-and-set guard (create, claim, lease, progress, cancel, reclaim)
can be read, and reviewed for races, side by side.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.wire import FinetuneRequest
from jobs.dataset_lock import dataset_lock, in_use, lock_dataset
from jobs.errors import IdempotencyConflict, InvalidTransition, JobNotFound
from jobs.records import (
    JobEventRecord,
    JobRecord,
    UTCDateTime,
    json_safe,
    new_job_id,
    scoped_idempotency_key,
    utcnow,
)
from jobs.request_checks import normalized_request, request_hash
from jobs.states import ACTIVE, ALLOWED_FROM, JobStatus

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE]


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # this worker now runs the job
    HELD = "held"  # another worker holds a live lease: a duplicate delivery, do nothing
    FINISHED = "finished"  # already terminal: a late or duplicate delivery
    CANCELLED = "cancelled"  # cancel was requested before it (re)started: now cancelled
    EXHAUSTED = "exhausted"  # no attempts left: now failed
    MISSING = "missing"  # no such row (yet)


@dataclass
class Claim:
    outcome: ClaimOutcome
    job: JobRecord | None


@dataclass
class ProgressUpdate:
    """Where a running job stands; None leaves a column unchanged."""

    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    losses: dict[str, float] | None = None
    val_metrics: dict[str, float] | None = None
    eta_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # event-only data

    def columns(self) -> dict[str, Any]:
        names = ("epoch", "total_epochs", "step", "total_steps", "losses", "val_metrics",
                 "eta_seconds")
        return {n: json_safe(getattr(self, n)) for n in names if getattr(self, n) is not None}


@dataclass
class ReclaimResult:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


# Pauses while a message may be ahead of its row's commit (about 3 s in all).
CLAIM_COMMIT_WAITS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)


class JobRepository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # ----- create and read
    def create(
        self,
        request: FinetuneRequest,
        idempotency_key: str | None = None,
        *,
        before_commit: Callable[[JobRecord], None] | None = None,
        resumed_from: str | None = None,
        owner_key: str | None = None,
        admit: Callable[[], None] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; returns (job, created).

        With a key already used: the same request returns that job (created=False), a
        different one raises ``IdempotencyConflict``. ``admit`` (a quota check) runs only
        when a new job would be created, so a replay is never refused by it. ``before_commit``
        runs after the row is flushed and before the commit; if it raises, nothing is written.
        """
        request = normalized_request(request)
        digest = request_hash(request)
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key, owner_key, digest)
            if existing is not None:
                return existing, False
        if admit is not None:
            admit()
        now = utcnow()
        job = JobRecord(
            id=new_job_id(), task=request.task, status=JobStatus.QUEUED.value,
            dataset_id=request.dataset_id, base=request.base, target_model=request.target_model,
            hyperparameters=request.hyperparameters, auto_activate=request.auto_activate,
            webhook_url=str(request.webhook_url) if request.webhook_url else None,
            idempotency_key=scoped_idempotency_key(idempotency_key, owner_key),
            request_hash=digest, total_epochs=request.hyperparameters.get("epochs"),
            created_at=now, updated_at=now, attempts=0, epoch=0, step=0,
            activated=False, cancel_requested=False, resumed_from=resumed_from,
            owner_key=owner_key,
        )
        with self._sessions() as session:
            try:
                # First: serialises this acceptance with a delete of the dataset
                # (jobs/dataset_lock.py); before_commit re-checks the dataset under it.
                lock_dataset(session, request.dataset_id)
                session.add(job)
                # The flush surfaces a concurrent duplicate key before anything is sent (and
                # puts the row before its event: the two mappers have no relationship).
                session.flush()
                session.add(self._status_event(job.id, JobStatus.QUEUED, now))
                session.flush()
                if before_commit is not None:
                    before_commit(job)
                session.commit()
            except IntegrityError:
                session.rollback()
                if idempotency_key is not None:
                    existing = self._by_key(idempotency_key, owner_key, digest)
                    if existing is not None:
                        return existing, False
                raise
        return job, True

    def _by_key(self, key: str, owner_key: str | None, digest: str) -> JobRecord | None:
        """The job ``key`` made for this owner (keys are scoped per API key)."""
        stored = scoped_idempotency_key(key, owner_key)
        with self._sessions() as session:
            job = session.scalars(select(JobRecord).where(
                JobRecord.idempotency_key == stored)).first()
        if job is not None and job.request_hash != digest:
            raise IdempotencyConflict(key, job.id)
        return job

    def get(self, job_id: str) -> JobRecord:
        with self._sessions() as session:
            job = session.get(JobRecord, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id!r} does not exist")
        return job

    def find(self, job_id: str) -> JobRecord | None:
        with self._sessions() as session:
            return session.get(JobRecord, job_id)

    def events_after(self, job_id: str, after_id: int = 0, limit: int = 1000
                     ) -> list[JobEventRecord]:
        """Events with id > ``after_id``, oldest first (poll with the last id seen)."""
        stmt = (select(JobEventRecord)
                .where(JobEventRecord.job_id == job_id, JobEventRecord.id > after_id)
                .order_by(JobEventRecord.id).limit(limit))
        with self._sessions() as session:
            return list(session.scalars(stmt))

    # ----- state changes
    def transition(
        self,
        job_id: str,
        target: JobStatus | str,
        *,
        worker_id: str | None = None,
        error: str | None = None,
        **columns: Any,
    ) -> JobRecord:
        """Move the job to ``target`` if its current state allows it (compare-and-set).

        With ``worker_id`` the change applies only while that worker holds the job, so a
        worker that lost its lease cannot overwrite its successor's work.
        """
        target = JobStatus(target)
        now = utcnow()
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        values.update({k: json_safe(v) if isinstance(v, dict | list) else v
                       for k, v in columns.items()})
        if target.is_terminal:
            values.setdefault("finished_at", now)
        if error is not None:
            values["error"] = error
        stmt = update(JobRecord).where(
            JobRecord.id == job_id,
            JobRecord.status.in_([s.value for s in ALLOWED_FROM[target]]),
        )
        if worker_id is not None:
            stmt = stmt.where(JobRecord.worker_id == worker_id)
        with self._sessions.begin() as session:
            if self._update(session, stmt.values(**values)):
                session.add(self._status_event(job_id, target, now, error=error))
                changed = True
            else:
                changed = False
        job = self.get(job_id)
        if not changed:
            raise InvalidTransition(job_id, job.status, target.value)
        return job

    def claim(self, job_id: str, worker_id: str, *, lease_s: float, max_attempts: int) -> Claim:
        """Start (or take over) the job for ``worker_id``: queued, or active with an expired
        lease or held by this same worker (a redelivery), becomes running with attempts+1."""
        now = utcnow()
        stale = now - timedelta(seconds=lease_s)
        # Three ways in, each one conditional update: the row is queued; or active with an
        # expired lease (its worker was lost); or active and held by this very worker (a
        # redelivery). A take-over records the re-queue it implies before "running", so the
        # status history reads the same whether the reclaimer or this claim got there first
        # (the reclaimer sends the message before it marks the row queued).
        routes = (
            (JobRecord.status == JobStatus.QUEUED.value, None),
            (and_(JobRecord.status.in_(_ACTIVE),
                  or_(JobRecord.worker_id.is_(None), JobRecord.worker_id != worker_id),
                  or_(JobRecord.heartbeat_at.is_(None), JobRecord.heartbeat_at < stale)),
             "lease expired"),
            (and_(JobRecord.status.in_(_ACTIVE), JobRecord.worker_id == worker_id),
             "redelivered"),
        )
        values = dict(status=JobStatus.RUNNING.value, attempts=JobRecord.attempts + 1,
                      worker_id=worker_id, heartbeat_at=now, updated_at=now, error=None,
                      started_at=_coalesce_time(JobRecord.started_at, now))
        common = (JobRecord.id == job_id, JobRecord.cancel_requested.is_(False),
                  JobRecord.attempts < max_attempts)
        # The producer sends the message before it commits the row (so a broker outage
        # writes nothing), so a fast worker can see the message before the row: wait for
        # the commit instead of calling the job missing, or lost while it is still queued.
        for wait in CLAIM_COMMIT_WAITS_S:
            claimed = False
            with self._sessions.begin() as session:
                for condition, requeued_because in routes:
                    stmt = update(JobRecord).where(*common, condition).values(**values)
                    if self._update(session, stmt):
                        claimed = True
                        if requeued_because is not None:
                            session.add(self._status_event(job_id, JobStatus.QUEUED, now,
                                                           reason=requeued_because))
                        session.add(self._status_event(job_id, JobStatus.RUNNING, now,
                                                       worker=worker_id))
                        break
            job = self.find(job_id)
            if claimed:
                return Claim(ClaimOutcome.CLAIMED, job)
            claimable_soon = job is None or (
                job.status == JobStatus.QUEUED.value and not job.cancel_requested
                and job.attempts < max_attempts)
            if not claimable_soon:
                break
            time.sleep(wait)
        if job is None:
            return Claim(ClaimOutcome.MISSING, None)
        status = JobStatus(job.status)
        if status.is_terminal:
            return Claim(ClaimOutcome.FINISHED, job)
        lease_live = (status.is_active and job.heartbeat_at is not None
                      and job.heartbeat_at >= stale and job.worker_id != worker_id)
        if lease_live:
            return Claim(ClaimOutcome.HELD, job)
        try:
            if job.cancel_requested:
                return Claim(ClaimOutcome.CANCELLED, self.transition(job_id, JobStatus.CANCELLED))
            return Claim(ClaimOutcome.EXHAUSTED, self.transition(
                job_id, JobStatus.FAILED, error=lost_message(job.attempts)))
        except InvalidTransition:  # someone else changed it meanwhile: let them have it
            return Claim(ClaimOutcome.HELD, self.find(job_id))

    def release(self, job_id: str, worker_id: str, requeue: Callable[[str], None]) -> bool:
        """Give a job back to the queue on a graceful worker shutdown, without spending an
        attempt. The row goes back to queued, then ``requeue`` sends it; if the send fails,
        the row is left running with an expired lease so ``reclaim_stale`` re-sends it."""
        now = utcnow()
        stmt = (update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.worker_id == worker_id,
                       JobRecord.status.in_(_ACTIVE))
                .values(status=JobStatus.QUEUED.value, worker_id=None, updated_at=now,
                        attempts=JobRecord.attempts - 1))
        with self._sessions.begin() as session:
            if not self._update(session, stmt):
                return False
            session.add(self._status_event(job_id, JobStatus.QUEUED, now,
                                           reason="worker shutting down"))
        try:
            requeue(job_id)
        except Exception:
            undo = (update(JobRecord)
                    .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED.value)
                    .values(status=JobStatus.RUNNING.value, heartbeat_at=None,
                            attempts=JobRecord.attempts + 1, updated_at=utcnow()))
            with self._sessions.begin() as session:
                self._update(session, undo)
            raise
        return True

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """Renew the lease; False when this worker no longer holds the job."""
        now = utcnow()
        stmt = (update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.worker_id == worker_id,
                       JobRecord.status.in_(_ACTIVE))
                .values(heartbeat_at=now))
        with self._sessions.begin() as session:
            return self._update(session, stmt)

    def record_progress(self, job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        """Update the job row and append a progress event; False when the lease was lost."""
        now = utcnow()
        columns = progress.columns()
        stmt = (update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.worker_id == worker_id,
                       JobRecord.status.in_(_ACTIVE))
                .values(**columns, updated_at=now, heartbeat_at=now))
        with self._sessions.begin() as session:
            if not self._update(session, stmt):
                return False
            session.add(JobEventRecord(job_id=job_id, created_at=now, kind="progress",
                                       data=json_safe({**columns, **progress.extra})))
        return True

    def set_tracking(self, job_id: str, worker_id: str, tracking: dict[str, Any]) -> bool:
        """Record where the job's tracking run is, while ``worker_id`` holds the job (also
        once it is terminal: the link may arrive after the last state change)."""
        stmt = (update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.worker_id == worker_id)
                .values(tracking=json_safe(tracking)))
        with self._sessions.begin() as session:
            return self._update(session, stmt)

    def append_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.add(JobEventRecord(job_id=job_id, created_at=utcnow(), kind=kind,
                                       data=json_safe(data)))

    def cancel(self, job_id: str) -> tuple[JobRecord, bool]:
        """Cancel a queued job now, or ask an active one to stop (its worker checks the flag
        at every step and keeps its checkpoint). Returns (job, cancelled_now): True when this
        call moved a queued job to cancelled. A finished job raises ``InvalidTransition``."""
        now = utcnow()
        queued = (update(JobRecord)
                  .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED.value)
                  .values(status=JobStatus.CANCELLED.value, cancel_requested=True,
                          finished_at=now, updated_at=now))
        active = (update(JobRecord)
                  .where(JobRecord.id == job_id, JobRecord.status.in_(_ACTIVE))
                  .values(cancel_requested=True, updated_at=now))
        with self._sessions.begin() as session:
            cancelled_now = self._update(session, queued)
            if cancelled_now:
                session.add(self._status_event(job_id, JobStatus.CANCELLED, now))
            requested = not cancelled_now and self._update(session, active)
            if requested:
                session.add(JobEventRecord(job_id=job_id, created_at=now, kind="log",
                                           data={"message": "cancel requested"}))
        job = self.get(job_id)
        if not (cancelled_now or requested) and JobStatus(job.status).is_terminal:
            raise InvalidTransition(job_id, job.status, JobStatus.CANCELLED.value)
        return job, cancelled_now

    def request_cancel(self, job_id: str) -> JobRecord:
        """``cancel``, except that cancelling a cancelled job returns it unchanged."""
        try:
            return self.cancel(job_id)[0]
        except InvalidTransition as exc:
            if exc.current == JobStatus.CANCELLED.value:
                return self.get(job_id)
            raise

    def is_cancel_requested(self, job_id: str) -> bool:
        with self._sessions() as session:
            flag = session.scalar(select(JobRecord.cancel_requested)
                                  .where(JobRecord.id == job_id))
        return bool(flag)

    def reclaim_stale(
        self,
        lease_seconds: float,
        max_attempts: int,
        requeue: Callable[[str], None] | None = None,
    ) -> ReclaimResult:
        """Recover jobs whose worker stopped heart-beating for longer than the lease.

        A job with attempts left is re-queued: ``requeue(job_id)`` (which sends it to the
        broker) runs first, and the row goes back to queued only once that succeeded, so a
        failed send leaves the job stale and the next pass tries again. A job out of
        attempts fails ("worker lost N times"); one whose cancel was requested is cancelled.
        """
        result = ReclaimResult()
        stale = utcnow() - timedelta(seconds=lease_seconds)
        is_stale = and_(JobRecord.status.in_(_ACTIVE),
                        or_(JobRecord.heartbeat_at.is_(None), JobRecord.heartbeat_at < stale))
        with self._sessions() as session:
            jobs = list(session.scalars(select(JobRecord).where(is_stale)))
        for job in jobs:
            guard = update(JobRecord).where(JobRecord.id == job.id, is_stale)
            now = utcnow()
            if job.cancel_requested:
                target, error, bucket = JobStatus.CANCELLED, None, result.cancelled
            elif job.attempts >= max_attempts:
                target, error, bucket = JobStatus.FAILED, lost_message(job.attempts), result.failed
            else:
                if requeue is not None:
                    try:
                        requeue(job.id)
                    except Exception:  # left stale: the next pass tries again
                        log.exception("could not re-send job %s", job.id)
                        continue
                target, error, bucket = JobStatus.QUEUED, None, result.requeued
            values: dict[str, Any] = {"status": target.value, "updated_at": now}
            if target.is_terminal:
                values.update(finished_at=now, error=error)
            else:
                values.update(worker_id=None)
            with self._sessions.begin() as session:
                if self._update(session, guard.values(**values)):
                    session.add(self._status_event(job.id, target, now, error=error,
                                                   reason="lease expired"))
                    bucket.append(job.id)
        return result

    def count(self, *, status: JobStatus | str | None = None, task: str | None = None) -> int:
        stmt = _filtered(select(func.count()).select_from(JobRecord), status, task)
        with self._sessions() as session:
            return int(session.scalar(stmt) or 0)

    def count_owned(self, owner_key: str | None) -> dict[str, int]:
        """The unfinished jobs of one API key (None: anonymous ones), for its quotas:
        ``{"queued": n, "active": m}`` (active: running or exporting)."""
        owner = (JobRecord.owner_key.is_(None) if owner_key is None
                 else JobRecord.owner_key == owner_key)
        unfinished = [s.value for s in JobStatus if not s.is_terminal]
        stmt = (select(JobRecord.status, func.count()).where(owner,
                                                             JobRecord.status.in_(unfinished))
                .group_by(JobRecord.status))
        with self._sessions() as session:
            rows = session.execute(stmt).all()
        counts = {"queued": 0, "active": 0}
        for status, n in rows:
            counts["queued" if status == JobStatus.QUEUED.value else "active"] += int(n)
        return counts

    def dataset_in_use(self, dataset_id: str) -> bool:
        """A job that has not finished (queued, running, exporting) names the dataset."""
        with self._sessions() as session:
            return in_use(session, dataset_id)

    def dataset_lock(self, dataset_id: str) -> contextlib.AbstractContextManager[
            Callable[[str], bool]]:
        """Hold the dataset's lock against job acceptance (a delete runs inside it)."""
        return dataset_lock(self._sessions, dataset_id)

    # Defined last: inside the class body the name shadows the builtin for type checkers.
    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        task: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[JobRecord]:
        """Jobs, newest first."""
        stmt = _filtered(select(JobRecord), status, task)
        stmt = stmt.order_by(JobRecord.created_at.desc(), JobRecord.id.desc())
        with self._sessions() as session:
            return list(session.scalars(stmt.limit(limit).offset(offset)))

    # ----- helpers
    @staticmethod
    def _update(session: Session, stmt: Any) -> bool:
        result = session.execute(stmt, execution_options={"synchronize_session": False})
        return bool(getattr(result, "rowcount", 0) == 1)

    @staticmethod
    def _status_event(job_id: str, status: JobStatus, at: datetime, **data: Any
                      ) -> JobEventRecord:
        payload = {"status": status.value, **{k: v for k, v in data.items() if v is not None}}
        return JobEventRecord(job_id=job_id, created_at=at, kind="status",
                              data=json_safe(payload))


def _filtered(stmt: Any, status: JobStatus | str | None, task: str | None) -> Any:
    if status is not None:
        stmt = stmt.where(JobRecord.status == JobStatus(status).value)
    if task is not None:
        stmt = stmt.where(JobRecord.task == str(task))
    return stmt


def lost_message(attempts: int) -> str:
    return f"worker lost {attempts} time{'s' if attempts != 1 else ''}; giving up"


def _coalesce_time(column: Any, value: datetime) -> Any:
    # A typed literal, so the UTC conversion of the column type applies to it too.
    return func.coalesce(column, literal(value, UTCDateTime()))

