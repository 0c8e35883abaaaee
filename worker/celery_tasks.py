"""Celery tasks: thin wrappers around plain functions (the domain logic is in runner.py)."""

from __future__ import annotations

from celery.exceptions import Reject

from jobs.queue import FINETUNE_TASK
from worker.celery_app import app
from worker.control import SHUTDOWN


@app.task(name=FINETUNE_TASK, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery's app.task is unannotated
def finetune(job_id: str) -> str | None:
    """Run one fine-tune job; the job's state lives in SQL, not in a Celery result."""
    if SHUTDOWN.is_set():
        # A warm shutdown is under way: put the message back for another worker.
        raise Reject("worker shutting down", requeue=True) from None
    from worker.runner import run_job  # torch is imported here, in the worker only

    status = run_job(job_id)
    return status.value if status is not None else None
