"""Job states and the transitions between them.

    queued -> running -> exporting -> succeeded
       |         |           |
       |         +-----------+--> failed | cancelled
       +--> cancelled | failed
    running/exporting -> queued   (a lost worker's job is re-queued by reclaim_stale)

Terminal states never change again: a late message for a finished job is a no-op.
"""

from __future__ import annotations

from core.wire import ACTIVE, TERMINAL, JobStatus

__all__ = ["ACTIVE", "ALLOWED_FROM", "TERMINAL", "JobStatus", "can_transition"]

# target -> the states it may be entered from. The repository turns each entry into one
# ``UPDATE ... WHERE status IN (...)``, so two processes can never both win a transition.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: ACTIVE,  # reclaim after a lost worker
    # active -> running is a takeover of an expired lease (or a redelivery to the same
    # worker): the job resumes from its last checkpoint.
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}) | ACTIVE,
    JobStatus.EXPORTING: frozenset({JobStatus.RUNNING}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.EXPORTING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}) | ACTIVE,
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}) | ACTIVE,
}


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(current) in ALLOWED_FROM[JobStatus(target)]
