"""Typed job errors. The API maps them to HTTP statuses in one place.

Suggested mapping: JobNotFound 404, IdempotencyConflict 409, InvalidTransition 409,
InvalidJobSpec 422, BrokerUnavailable 503.
"""

from __future__ import annotations

from typing import Any


class JobError(Exception):
    """Base class for job errors."""


class JobNotFound(JobError):
    pass


class IdempotencyConflict(JobError):
    """The idempotency key was used before with a different request body."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for job {job_id} with a different request"
        )
        self.key = key
        self.job_id = job_id


class InvalidTransition(JobError):
    """The job is not in a state the requested change may start from."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id} is {current}; it cannot become {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class InvalidJobSpec(JobError):
    """A fine-tune request that cannot become a job; ``errors`` name the offending fields."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class BrokerUnavailable(JobError):
    """The message broker did not accept the job; nothing was written."""
