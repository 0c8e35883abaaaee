"""Glue between the job routes and jobs/: blocking calls off the event loop, response shapes,
and the server-sent-event stream of a job's event log.

SSE format (``GET /jobs/{id}/events``), one message per row of ``job_events``:

    id: <event id>
    event: progress | status | sample | log
    data: {"id": ..., "job_id": ..., "created_at": ..., "kind": ..., "data": {...}}

A reconnecting client sends ``Last-Event-ID`` (or ``?after=``) and gets the events after it.
The stream ends after the terminal status event (succeeded, failed, cancelled); a silence of
``job_events_heartbeat_s`` is broken by a comment line (``: keep-alive``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from core.settings import Settings
from core.wire import (
    FinetuneRequest,
    JobMetrics,
    JobPage,
    JobStatus,
    JobView,
    MetricPoint,
    SampleInfo,
)
from jobs.artifacts import JobArtifacts
from jobs.queue import JobQueue, create_and_enqueue, resume_and_enqueue
from jobs.records import JobEventRecord
from jobs.repository import JobRepository
from jobs.request_checks import Stores
from jobs.views import job_event, job_view
from jobs.webhooks import notify_terminal
from service.auth import Caller
from service.ratelimit import check_job_quota

# ----------------------------------------------------------------- create, read, cancel


def _quota(repo: JobRepository, caller: Caller | None) -> Callable[[], None] | None:
    """The job quota check of ``caller`` (service/ratelimit.py), run before a job is made."""
    if caller is None:
        return None
    return lambda: check_job_quota(repo, caller.key_id, caller.limits)


async def create_job(repo: JobRepository, queue: JobQueue, stores: Stores,
                     request: FinetuneRequest, idempotency_key: str | None,
                     caller: Caller | None = None) -> tuple[JobView, bool]:
    """Check, record and send the job; (view, created). created=False: an idempotent replay.
    With ``caller`` the job records its key and counts against the key's job quota."""
    owner = caller.key_id if caller else None
    job, created = await run_in_threadpool(
        lambda: create_and_enqueue(repo, request, idempotency_key, queue=queue,
                                   stores=stores, owner_key=owner,
                                   admit=_quota(repo, caller)))
    return job_view(job), created


async def get_job(repo: JobRepository, job_id: str) -> JobView:
    return job_view(await run_in_threadpool(repo.get, job_id))


async def list_jobs(repo: JobRepository, status: JobStatus | None, task: str | None,
                    limit: int, offset: int) -> JobPage:
    def read() -> JobPage:
        jobs = repo.list(status=status, task=task, limit=limit, offset=offset)
        return JobPage(jobs=[job_view(j) for j in jobs],
                       total=repo.count(status=status, task=task), limit=limit, offset=offset)

    return await run_in_threadpool(read)


async def cancel_job(repo: JobRepository, settings: Settings, job_id: str) -> JobView:
    """A queued job is cancelled now (and its webhook fired from here: no worker will run
    it); a running one is asked to stop at its next step. A finished job: InvalidTransition."""
    job, cancelled_now = await run_in_threadpool(repo.cancel, job_id)
    if cancelled_now:
        notify_terminal(job, settings, repo)
    return job_view(job)


async def resume_job(repo: JobRepository, queue: JobQueue, artifacts: JobArtifacts,
                     job_id: str, caller: Caller | None = None) -> JobView:
    """A NEW job continuing a failed or cancelled one from its last checkpoint (same
    request, ``resumed_from`` = the old id), recorded and sent in one step. JobNotFound,
    InvalidTransition (not failed/cancelled, or no checkpoint), BrokerUnavailable; the new
    job belongs to ``caller``'s key and counts against its quota."""
    owner = caller.key_id if caller else None
    job, _ = await run_in_threadpool(
        lambda: resume_and_enqueue(repo, job_id, queue, artifacts, owner_key=owner,
                                   admit=_quota(repo, caller)))
    return job_view(job)


# ----------------------------------------------------------------- metrics and samples


def metric_points(events: list[JobEventRecord]) -> list[MetricPoint]:
    """The epoch-end progress events as a series (a resumed job's repeat of an epoch wins)."""
    points: dict[int, MetricPoint] = {}
    for event in events:
        data = event.data or {}
        if event.kind == "progress" and data.get("kind") == "epoch":
            epoch = int(data.get("epoch", 0))
            points[epoch] = MetricPoint(epoch=epoch, step=int(data.get("step", 0)),
                                        losses=data.get("losses") or {},
                                        val_metrics=data.get("val_metrics") or {},
                                        at=event.created_at)
    return [points[e] for e in sorted(points)]


async def job_metrics(repo: JobRepository, job_id: str) -> JobMetrics:
    def read() -> JobMetrics:
        job = repo.get(job_id)
        events: list[JobEventRecord] = []
        while batch := repo.events_after(job_id, events[-1].id if events else 0):
            events.extend(batch)
        return JobMetrics(job_id=job_id, status=JobStatus(job.status),
                          points=metric_points(events))

    return await run_in_threadpool(read)


async def job_samples(repo: JobRepository, artifacts: JobArtifacts, job_id: str
                      ) -> list[SampleInfo]:
    def read() -> list[SampleInfo]:
        repo.get(job_id)  # JobNotFound before looking at the store
        return [SampleInfo(name=s.name, epoch=s.epoch, bytes=s.bytes,
                           url=f"/jobs/{job_id}/samples/{s.name}")
                for s in artifacts.list_samples(job_id)]

    return await run_in_threadpool(read)


async def sample_file(repo: JobRepository, artifacts: JobArtifacts, job_id: str, name: str
                      ) -> Path:
    def find() -> Path:
        repo.get(job_id)
        return artifacts.sample_path(job_id, name)

    return await run_in_threadpool(find)


# ----------------------------------------------------------------- server-sent events


EVENTS_PER_READ = 500


def sse_message(event: JobEventRecord) -> str:
    body = job_event(event).model_dump_json()
    return f"id: {event.id}\nevent: {event.kind}\ndata: {body}\n\n"


def is_terminal_event(event: JobEventRecord) -> bool:
    status = (event.data or {}).get("status")
    return event.kind == "status" and status in {s.value for s in JobStatus if s.is_terminal}


async def event_stream(repo: JobRepository, job_id: str, after: int, *, poll_s: float,
                       heartbeat_s: float) -> AsyncIterator[str]:
    """The job's events after ``after``, as they are written, until the terminal one."""
    last, said_at = after, time.monotonic()
    while True:
        events = await asyncio.to_thread(repo.events_after, job_id, last, EVENTS_PER_READ)
        if not events:
            job = await asyncio.to_thread(repo.get, job_id)
            if JobStatus(job.status).is_terminal:
                # Events written between the read above and this one, then the end (also
                # where a client resumes after the terminal event: it gets nothing more).
                for event in await asyncio.to_thread(repo.events_after, job_id, last):
                    yield sse_message(event)
                return
        for event in events:
            yield sse_message(event)
            last, said_at = event.id, time.monotonic()
            if is_terminal_event(event):
                return
        if time.monotonic() - said_at >= heartbeat_s:
            yield ": keep-alive\n\n"
            said_at = time.monotonic()
        if len(events) < EVENTS_PER_READ:  # a full page means more are waiting
            await asyncio.sleep(poll_s)
