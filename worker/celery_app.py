"""The worker-side Celery app: the shared queue config plus what long GPU jobs need.

Start it with ``python -m worker`` (worker/__main__.py), or ``celery -A worker.celery_app
worker --pool=solo``. One worker process per GPU, each pinned with ``CUDA_VISIBLE_DEVICES``::

    CUDA_VISIBLE_DEVICES=0 python -m worker --hostname gpu0@%h
    CUDA_VISIBLE_DEVICES=1 python -m worker --hostname gpu1@%h

Pool: ``solo``. A worker runs one job at a time anyway (one GPU, one job), and with solo
nothing forks: CUDA is never initialised in a parent that forks a child (which breaks CUDA),
the heartbeat and cancel threads live in the process that trains, and ``kill -9`` of the
worker is the loss of exactly one process and one job, which the lease then recovers.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from core.plugins import TASK_ENTRY_POINTS, WORKER_ENTRY_POINTS, import_modules
from core.settings import Settings, get_settings
from jobs.queue import celery_config, make_celery
from worker.runtime import claim_cpu_budget

log = logging.getLogger(__name__)


def worker_config(settings: Settings) -> dict[str, Any]:
    config = celery_config(settings)
    config.update(
        worker_pool="solo",
        worker_concurrency=1,
        # Take one message at a time: a job waiting behind a long one on this worker could
        # be running on another GPU instead.
        worker_prefetch_multiplier=1,
        # Acknowledge after the job, not before: a worker lost mid-job leaves its message
        # unacknowledged, so Redis redelivers it after the visibility timeout. (The lease in
        # SQL usually recovers the job much sooner; the claim ignores the late duplicate.)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # The worker keeps trying to reach the broker (Redis restarts, deploys).
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_send_task_events=False,
    )
    return config


def make_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings, name="toonforge-worker")
    app.conf.update(worker_config(settings))
    return app


def import_plugins(settings: Settings) -> list[str]:
    """The extra families' task specs and worker modules (nets, trainers): imported once at
    start, before any job looks up a task or an architecture."""
    return [*import_modules(settings.task_plugins, TASK_ENTRY_POINTS),
            *import_modules(settings.worker_plugins, WORKER_ENTRY_POINTS)]


# This module is the first one a worker process imports (``python -m worker`` and
# ``celery -A worker.celery_app`` alike), so the CPU budget is claimed here, before a plugin
# or a job imports torch and before any thread starts, and the plugins are loaded here.
claim_cpu_budget(get_settings())
import_plugins(get_settings())
app = make_worker_app(get_settings())

# Registers the tasks on `app` (celery_tasks.py imports `app` from here), and the log
# receivers (our handler instead of Celery's, the job id on a job's lines: worker/logs.py).
from worker import celery_tasks, logs  # noqa: E402,F401


@signals.worker_ready.connect  # type: ignore[untyped-decorator]  # Celery's connect is unannotated
def _on_ready(**_: Any) -> None:
    from worker.runtime import Reclaimer, get_runtime
    from worker.starter import queue_starter_jobs

    runtime = get_runtime()
    # Recover jobs of workers that died, now and every half lease.
    Reclaimer(runtime).start()
    # A first start with an empty store trains the starter models (TOONFORGE_STARTER_MODELS).
    try:
        queue_starter_jobs(runtime)
    except Exception:
        log.exception("queueing the starter jobs failed; the worker serves jobs anyway")
    # Import torch and the trainers now rather than when the first job arrives, and size
    # (and start) torch's thread pools to the budget.
    import worker.runner  # noqa: F401
    from worker.runtime import apply_torch_threads

    apply_torch_threads(runtime.settings)


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]  # Celery's connect is unannotated
def _on_warm_shutdown(**_: Any) -> None:
    from worker.control import SHUTDOWN

    # The running job stops at its next step, checkpoints and goes back to the queue.
    # (This runs inside a signal handler: set a flag, nothing more.)
    SHUTDOWN.set()
