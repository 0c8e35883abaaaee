"""Why a task's model serves nothing yet, and what to do about it: the 503
``no_active_version`` answer, built from what the server knows.

The inference pool raises ``NothingServes`` (the task and its model line); the handler
installed here completes the message from the model store and the job records:

- a job that will publish to the line is queued or running (a starter on a fresh install):
  its id, state and ETA, and where to follow it;
- versions exist but none is active (the activation gate refused them): the newest one, its
  job's gate verdict, and the command and HTTP call that activate it anyway;
- always: how to import weights for *this* task (its own architectures, from its spec) or
  fine-tune one.

Nothing here names a family: everything comes from the task spec and the stores. A job
database that does not answer only shortens the message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.wire import JobStatus
from jobs.records import JobRecord, scoped_idempotency_key
from jobs.repository import JobRepository
from model_store.errors import NoActiveVersion, StoreError
from model_store.store import ModelStore
from service.errors import envelope
from tasks import get_task

log = logging.getLogger(__name__)

_WAITING = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.EXPORTING)
_JOBS_READ = 200  # unfinished jobs looked at (a queue longer than this is named as such)


class NothingServes(NoActiveVersion):
    """No version of ``model`` (the model line a request for ``task`` resolved to) is
    active: the 503 the handler below completes."""

    def __init__(self, task: str, model: str, message: str) -> None:
        super().__init__(message)
        self.task = task
        self.model = model


def import_hint(task: str, model: str) -> str:
    """The import command for ``task``'s own architectures (from its spec)."""
    archs = get_task(task).archs
    arch = archs[0] if archs else "<arch>"
    others = f" (architectures: {', '.join(archs)})" if len(archs) > 1 else ""
    return (f"import weights with `toonforge import --task {task} --arch {arch} --weights"
            f" <file> --model {model} --activate`{others}, or fine-tune one with"
            " POST /jobs/finetune")


@dataclass(frozen=True)
class _Refused:
    version: int
    reason: str | None  # the gate's verdict from the job that published it


def _refused_version(store: ModelStore, jobs: JobRepository | None, model: str
                     ) -> _Refused | None:
    """The newest version that passed parity (so it may be activated), with its job's
    activation verdict."""
    try:
        versions = sorted(store.versions(model), reverse=True)
    except StoreError:
        return None
    for version in versions:
        try:
            manifest = store.manifest(model, version)
        except StoreError:
            continue
        if not manifest.parity.passed:
            continue  # can never be active: not worth naming
        reason = None
        job_id = manifest.lineage.job_id
        if job_id and jobs is not None:
            job = jobs.find(job_id)
            reason = job.activation_reason if job is not None else None
        return _Refused(version, reason)
    return None


def _waiting_jobs(jobs: JobRepository, task: str, model: str) -> tuple[list[JobRecord], int]:
    """Unfinished jobs that publish to ``model`` (oldest first), and how many unfinished
    jobs of any kind were created before the first of them."""
    unfinished = [job for status in _WAITING
                  for job in jobs.list(status=status, limit=_JOBS_READ)]
    unfinished.sort(key=lambda job: (job.created_at, job.id))
    mine = [job for job in unfinished if job.task == task and job.target_model == model]
    ahead = unfinished.index(mine[0]) if mine else 0
    return mine, ahead


def _is_starter(job: JobRecord) -> bool:
    """The first start queues each task's starter under the idempotency key
    ``starter-<task>`` (no API key), on the dataset of the same name."""
    return (job.idempotency_key == scoped_idempotency_key(f"starter-{job.task}", None)
            or job.dataset_id == f"starter-{job.task}")


def _describe_job(job: JobRecord, ahead: int) -> str:
    kind = "the starter job" if _is_starter(job) else "job"
    status = JobStatus(job.status)
    if status == JobStatus.QUEUED:
        where = f"queued behind {ahead} other job(s)" if ahead else "queued, next to run"
        return f"{kind} {job.id} will publish it ({where}; follow it: GET /jobs/{job.id})"
    progress = f"epoch {job.epoch}/{job.total_epochs or '?'}"
    eta = f", ETA {round(job.eta_seconds)} s" if job.eta_seconds is not None else ""
    return (f"{kind} {job.id} is {status.value} and will publish it ({progress}{eta};"
            f" follow it: GET /jobs/{job.id})")


def explain(store: ModelStore, jobs: JobRepository | None, exc: NothingServes) -> str:
    """The whole message (blocking: store and database reads)."""
    parts = [exc.message]
    waiting: list[JobRecord] = []
    if jobs is not None:
        try:
            waiting, ahead = _waiting_jobs(jobs, exc.task, exc.model)
        except Exception:  # noqa: BLE001 - the database is optional to this answer
            log.warning("no_active_version: job records unreadable", exc_info=True)
            jobs = None
        else:
            if waiting:
                parts.append(_describe_job(waiting[0], ahead))
    try:
        refused = _refused_version(store, jobs, exc.model)
    except Exception:  # noqa: BLE001 - the store is read again by the next request
        log.warning("no_active_version: versions of %s unreadable", exc.model, exc_info=True)
        refused = None
    if refused is not None:
        ref = f"{exc.model}@{refused.version}"
        why = f" ({refused.reason})" if refused.reason else ""
        parts.append(
            f"{ref} exists but is not active{why}; to serve it anyway: `toonforge models"
            f" activate {exc.model} {refused.version}` or POST /models/{exc.model}/activate"
            f' with {{"version": {refused.version}}}')
    parts.append(("meanwhile, or instead: " if waiting or refused else "")
                 + import_hint(exc.task, exc.model))
    return "; ".join(parts)


def install_unserved(app: FastAPI) -> None:
    async def nothing_serves(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NothingServes)
        state: Any = request.app.state
        stores = getattr(state, "stores", None)
        jobs = getattr(state, "job_repository", None)
        message = exc.message
        if stores is not None:
            message = await asyncio.to_thread(explain, stores.models, jobs, exc)
        return envelope(exc.http_status, exc.code, message, exc.details)

    app.add_exception_handler(NothingServes, nothing_serves)
