"""Per-process worker state: settings, database, job repository, queue producer, worker id,
the reclaimer thread that recovers jobs of lost workers, and the process's CPU budget.

Torch-free at import; built lazily once per worker process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from core.settings import Settings, get_settings
from jobs.artifacts import JobArtifacts, open_artifacts
from jobs.db import Database
from jobs.queue import JobQueue, requeue_stale_jobs
from jobs.repository import JobRepository
from jobs.request_checks import Stores
from model_store.factory import open_dataset_store, open_model_store
from model_store.notify import notifier_from_settings

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    db: Database
    repo: JobRepository
    queue: JobQueue
    worker_id: str

    @property
    def store_root(self) -> Path:
        """This worker's store directory: the store itself when it is a directory, only
        the worker's working dir and cache with an S3 store (jobs' work dirs live here)."""
        return Path(self.settings.store_dir)

    # The stores, opened once per process on first use (the backend the settings choose:
    # model_store/factory.py); activations are announced to the API replicas.
    @cached_property
    def stores(self) -> Stores:
        models = open_model_store(self.settings,
                                  notifier=notifier_from_settings(self.settings, role="worker"))
        return Stores(models, open_dataset_store(self.settings))

    @cached_property
    def artifacts(self) -> JobArtifacts:
        """Job checkpoints and samples (the store directory, or the object store)."""
        return open_artifacts(self.settings)

    @classmethod
    def create(cls, settings: Settings, worker_id: str | None = None) -> WorkerRuntime:
        db = Database.from_settings(settings)
        db.create_schema()
        return cls(
            settings=settings,
            db=db,
            repo=JobRepository(db.sessions),
            queue=JobQueue(settings),
            # host:pid is unique among live workers; a restarted worker is a new one, so its
            # predecessor's jobs are taken over only once their lease expired.
            worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
        )


_runtime: WorkerRuntime | None = None
_lock = threading.Lock()


def get_runtime() -> WorkerRuntime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = WorkerRuntime.create(get_settings())
        return _runtime


class Reclaimer(threading.Thread):
    """Every half lease, re-queue jobs whose worker stopped heart-beating and fail those out
    of attempts. It runs in every worker; the compare-and-set makes that safe, and a worker
    that starts after a crash picks up its predecessor's job within one lease."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        super().__init__(name="job-reclaimer", daemon=True)
        self.runtime = runtime
        self.interval = max(runtime.settings.job_lease_s / 2, 0.5)
        self.stopped = threading.Event()

    def run(self) -> None:
        from jobs.webhooks import notify_terminal

        while True:
            try:
                result = requeue_stale_jobs(self.runtime.repo, self.runtime.queue)
                for job_id in result.failed + result.cancelled:
                    notify_terminal(self.runtime.repo.get(job_id), self.runtime.settings,
                                    self.runtime.repo)
            except Exception:
                log.exception("reclaiming stale jobs failed; trying again later")
            if self.stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopped.set()


# -- the CPU budget of training beside serving (docs/DEPLOY.md "CPU budgets") -----------------

# How many elements one warm-up op touches: enough for torch to hand every thread a chunk.
_WARM_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class CpuBudget:
    """What this worker process trains with: torch threads, niceness, OpenMP's idle wait."""

    threads: int
    interop_threads: int
    nice: int
    omp_wait_policy: str  # the environment's OMP_WAIT_POLICY ("" : OpenMP's own default)

    def summary(self) -> str:
        return (f"torch threads {self.threads} (inter-op {self.interop_threads}),"
                f" nice {self.nice}, OpenMP wait {self.omp_wait_policy or 'default'}")


def claim_cpu_budget(settings: Settings) -> None:
    """Lower the process's scheduling priority and make OpenMP threads wait passively.

    Run it before torch is imported (libgomp reads OMP_WAIT_POLICY once, when it loads) and
    before threads start: Linux keeps a niceness per thread, and new threads inherit the
    creating thread's, so every thread there is now is reniced as well."""
    if settings.train_passive_wait:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _renice_process(settings.train_nice)


def _renice_process(nice: int) -> None:
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread (and what it starts) only
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # a thread that ended meanwhile
            continue


def apply_torch_threads(settings: Settings) -> CpuBudget:
    """Set torch's thread pools to the budget and start its intra-op team now (the first
    job does not pay for it, and the team exists at the niceness set before)."""
    import torch

    threads = settings.train_threads
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = settings.train_thread_count()
    if threads is not None:  # else torch's default, which follows OMP_NUM_THREADS
        torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(settings.train_interop_threads)
    except RuntimeError:  # already started by an earlier parallel op; keeps its size
        log.warning("torch's inter-op pool was already running; kept its %d threads",
                    torch.get_num_interop_threads())
    torch.ones(_WARM_ELEMENTS).add_(1)
    budget = CpuBudget(torch.get_num_threads(), torch.get_num_interop_threads(),
                       os.getpriority(os.PRIO_PROCESS, 0), os.environ.get("OMP_WAIT_POLICY", ""))
    log.info("CPU budget: %s", budget.summary())
    return budget
