"""Typed job errors, each with its stable code and HTTP status (core/errors.py)."""

from __future__ import annotations

from typing import Any

from core.errors import DomainError


class JobError(DomainError):
    """Base class for job errors."""


class JobNotFound(JobError):
    code = "job_not_found"
    http_status = 404


class IdempotencyConflict(JobError):
    """The idempotency key was used before with a different request body."""

    code = "idempotency_conflict"
    http_status = 409

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for job {job_id} with a different request"
        )
        self.key = key
        self.job_id = job_id


class InvalidTransition(JobError):
    """The job is not in a state the requested change may start from."""

    code = "job_conflict"
    http_status = 409

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id} is {current}; it cannot become {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class InvalidJobRequest(JobError):
    """A fine-tune request that cannot become a job; ``errors`` locate each offending field
    as FastAPI's 422 details do (``loc`` = ["body", field, ...])."""

    code = "invalid_parameter"
    http_status = 422

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors or []
        fields = [".".join(str(p) for p in e["loc"][1:]) or "body" for e in self.errors]
        described = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, self.errors,
                                                                   strict=True))
        super().__init__(described or message, {"errors": self.errors})


class BrokerUnavailable(JobError):
    """The message broker did not accept the job; nothing was written."""

    code = "broker_unavailable"
    http_status = 503
