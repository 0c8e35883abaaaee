"""Glue between the sweep routes and jobs/sweeps.py: the whole-sweep quota check, blocking
calls off the event loop, and the comparison's reads (job rows and epoch metrics)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from core.settings import Settings
from core.wire import FinetuneRequest, MetricPoint, SweepPage, SweepRequest, SweepView
from jobs.queue import JobQueue, create_and_enqueue
from jobs.records import JobEventRecord, JobRecord
from jobs.repository import JobRepository
from jobs.request_checks import Stores
from jobs.sweeps import SweepRecord, SweepRepository, compare, create_sweep, summary
from service.auth import Caller
from service.jobs_api import _quota, metric_points
from service.ratelimit import JOB_QUOTA_RETRY_S, QuotaExceeded, check_job_quota


def check_sweep_quota(repo: JobRepository, caller: Caller, points: int) -> None:
    """Room for ``points`` more jobs in the caller's quotas: the queued-jobs quota must
    take all of them (a sweep is all or nothing), and the running-jobs check is the one a
    single job gets (service/ratelimit.py)."""
    limits = caller.limits
    owner = caller.key_id
    queued = repo.count_owned(owner)["queued"]
    if limits.max_queued_jobs and queued + points > limits.max_queued_jobs:
        who = f"key {owner}" if owner else "anonymous callers"
        raise QuotaExceeded(
            f"a sweep of {points} points needs {points} queued jobs; {who} already"
            f" {'has' if owner else 'have'} {queued} queued and the limit is"
            f" {limits.max_queued_jobs}; nothing was created", JOB_QUOTA_RETRY_S,
            queued=queued, requested=points, limit=limits.max_queued_jobs)
    check_job_quota(repo, owner, limits)


async def create(repo: JobRepository, sweeps: SweepRepository, queue: JobQueue,
                 settings: Settings, stores: Stores, request: SweepRequest,
                 idempotency_key: str | None,
                 caller: Caller) -> tuple[SweepView, bool]:
    owner = caller.key_id
    admit = _quota(repo, caller)

    def create_job(point: FinetuneRequest) -> JobRecord:
        # References were checked per point already (jobs/sweeps.point_requests); the
        # dataset is checked again under its lock.
        job, _ = create_and_enqueue(repo, point, None, queue=queue, stores=stores,
                                    checked=True, owner_key=owner, admit=admit)
        return job

    def run() -> tuple[SweepView, bool]:
        record, created = create_sweep(
            sweeps, request, create_job=create_job, cancel_job=repo.cancel,
            stores=stores, max_points=settings.sweep_max_points,
            owner_key=owner, admit_all=lambda n: check_sweep_quota(repo, caller, n),
            idempotency_key=idempotency_key)
        return view(repo, record), created

    return await run_in_threadpool(run)


def _epochs(repo: JobRepository, job_id: str) -> list[MetricPoint]:
    events: list[JobEventRecord] = []
    while batch := repo.events_after(job_id, events[-1].id if events else 0):
        events.extend(batch)
    return metric_points(events)


def view(repo: JobRepository, record: SweepRecord) -> SweepView:
    jobs = [repo.find(job_id) for job_id in record.job_ids]
    epochs = [_epochs(repo, job_id) if job is not None else []
              for job_id, job in zip(record.job_ids, jobs, strict=True)]
    return compare(record, jobs, epochs)


async def get(repo: JobRepository, sweeps: SweepRepository, sweep_id: str) -> SweepView:
    return await run_in_threadpool(lambda: view(repo, sweeps.get(sweep_id)))


async def page(sweeps: SweepRepository, limit: int, offset: int) -> SweepPage:
    def read() -> SweepPage:
        return SweepPage(sweeps=[summary(r) for r in sweeps.list(limit, offset)],
                         total=sweeps.count(), limit=limit, offset=offset)

    return await run_in_threadpool(read)


