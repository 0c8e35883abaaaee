"""The job tables.

``jobs`` holds one row per fine-tune job: the request, where it stands, and its result.
``job_events`` is an append-only log per job (progress, status changes, samples, log lines):
it is the metrics time series and the source of server-sent events. Readers page through it
by id (``events_after``), which works across processes without any pub/sub.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


def scoped_idempotency_key(key: str | None, owner_key: str | None) -> str | None:
    """The stored form of a client's Idempotency-Key: private to the API key that sent it
    (anonymous callers share one scope of their own), so a key reused by another caller
    creates that caller's own job instead of answering someone else's. A digest keeps the
    stored value inside the column whatever the client's key length."""
    if key is None:
        return None
    digest = hashlib.sha256(f"{owner_key or ''}\n{key}".encode()).hexdigest()
    return f"{owner_key or 'anonymous'}:{digest}"


def json_safe(value: Any) -> Any:
    """JSON that every backend stores: NaN/inf become null (PostgreSQL rejects them), paths
    and other odd scalars become strings or floats."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        return json_safe(float(value))  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class JobRecord(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    task: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    dataset_id: Mapped[str] = mapped_column(String(128))
    # "model" (its active version), "model@n", or an architecture name (from scratch)
    base: Mapped[str] = mapped_column(String(160))
    target_model: Mapped[str] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    auto_activate: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    # sha256 of the canonical request body: same key + different body is a conflict
    request_hash: Mapped[str] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)

    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    losses: Mapped[dict[str, float | None] | None] = mapped_column(JSON, nullable=True)
    val_metrics: Mapped[dict[str, float | None] | None] = mapped_column(JSON, nullable=True)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    result_version: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # The epoch whose weights were published, and their validation metrics (the gate
    # metric among them): what the version is, not what the last epoch measured.
    published_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published_metrics: Mapped[dict[str, float | None] | None] = mapped_column(JSON,
                                                                              nullable=True)
    activated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the new version did or did not become active (the gate's verdict).
    activation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The cancelled or failed job whose last checkpoint this job continues from.
    resumed_from: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The API key that created the job (jobs/keys.py); None: anonymous open access. Per-key
    # job quotas count by it (service/ratelimit.py).
    owner_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Where the job's experiment-tracking run is (worker/training/tracking.py): the MLflow
    # run id, experiment id and UI link; None when the job logged no run.
    tracking: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_jobs_created_at", "created_at"),)


class JobEventRecord(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # progress | status | sample | log | webhook
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DatasetLockRecord(Base):
    """One row per dataset id that a job was accepted for or a delete was tried on: the row
    both take a write lock on (``JobRepository.dataset_lock``), so accepting a job for a
    dataset and deleting that dataset happen one after the other, never interleaved."""

    __tablename__ = "dataset_locks"

    dataset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

