"""The producer side of the job queue: Celery configuration and sending jobs to the broker.

Torch-free (the API imports it). The message carries only the job id; the job itself lives in
SQL, so a message may be lost or duplicated without harm: ``reclaim_stale`` re-sends lost
ones and the worker's claim ignores duplicates.

Brokers:
- ``TOONFORGE_BROKER_URL=redis://host:6379/0`` in production.
- unset: kombu's ``filesystem://`` transport under ``<data_dir>/broker/`` -- no server, and
  still a real, separate worker process. Messages are files; consuming one is an atomic
  ``rename`` into ``processed/`` (same file system), so two workers never take the same one.
  We write each message under a temporary name and rename it into place, because kombu
  writes it in place and a polling consumer could otherwise read a half-written file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import filesystem as kombu_fs
from kombu.utils.json import dumps

from core.settings import EMBEDDED_BROKER_SCHEME
from core.wire import FinetuneRequest, JobStatus
from jobs.errors import BrokerUnavailable, InvalidTransition
from jobs.records import JobRecord
from jobs.request_checks import Stores, check_dataset, check_references

if TYPE_CHECKING:
    from core.settings import Settings
    from jobs.artifacts import JobArtifacts
    from jobs.repository import JobRepository, ReclaimResult

log = logging.getLogger(__name__)

FINETUNE_TASK = "toonforge.finetune"
EMBEDDED_SCHEME = EMBEDDED_BROKER_SCHEME


class MessageStamps:
    """Fixed-width, strictly increasing stamps that order message files first in, first out.

    kombu's consumer takes the file whose name sorts first *as text*. A stamp of unpadded
    milliseconds sorts "1000000_" before "999999_" (newer before older once the clock gains
    a digit), and a monotonic clock restarts at boot, so messages queued before a reboot
    sorted among new ones. Wall-clock nanoseconds padded to 20 digits sort as numbers for
    the next few centuries and survive restarts; a stamp never repeats or goes back within
    a process, even if the wall clock steps backwards.
    """

    WIDTH = 20

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(self.clock(), self._last + 1)
            return f"{self._last:0{self.WIDTH}d}"


class _AtomicFilesystemChannel(kombu_fs.Channel):
    stamps: ClassVar[MessageStamps] = MessageStamps()

    # kombu's virtual base and its filesystem Channel declare _put differently.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # kombu's name scheme (stamp first, queue name as the suffix) with a stamp that
        # sorts in time order; the temporary name has no ".msg" suffix, so consumers skip
        # it until the rename.
        name = f"{self.stamps.next()}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(str(dumps(payload)).encode())  # type: ignore[no-untyped-call]
            os.rename(tmp, final)
        except OSError as exc:
            raise ChannelError(f"cannot write message {final!r}: {exc}") from exc


class AtomicFilesystemTransport(kombu_fs.Transport):
    Channel = _AtomicFilesystemChannel


# "filesystem://" resolves to our transport in every process that imports this module (the
# API, the worker and `python -m worker`), so producer and consumer always agree.
TRANSPORT_ALIASES[EMBEDDED_SCHEME] = "jobs.queue:AtomicFilesystemTransport"


def is_embedded(settings: Settings) -> bool:
    return settings.jobs_broker_url.startswith(f"{EMBEDDED_SCHEME}://")


def embedded_broker_dirs(settings: Settings) -> dict[str, Path]:
    root = Path(settings.data_dir).resolve() / "broker"
    return {"queue": root / "queue", "processed": root / "processed", "control": root / "control"}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the producer (API) and the worker."""
    config: dict[str, Any] = {
        "broker_url": settings.jobs_broker_url,
        # Producers give up after this long (POST /jobs/finetune answers 503 instead of
        # hanging); kombu uses it as the total time for connecting, retries included.
        "broker_connection_timeout": settings.broker_connect_timeout_s,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.job_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Job state lives in SQL; a result backend would be a second, stale copy.
        "task_ignore_result": True,
        "result_backend": None,
    }
    if is_embedded(settings):
        dirs = embedded_broker_dirs(settings)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(dirs["queue"]),
            "data_folder_out": str(dirs["queue"]),
            "control_folder": str(dirs["control"]),
            # Consuming moves the file here: a rename on the same file system is atomic.
            "store_processed": True,
            "processed_folder": str(dirs["processed"]),
            "polling_interval": 0.5,
        }
        # Remote control uses fanout messages that would pile up as files for dead workers.
        config["worker_enable_remote_control"] = False
    else:
        config["broker_transport_options"] = {
            # Redis redelivers an unacknowledged message after this long; a job may run for
            # hours, so this must exceed the longest job (a lost worker is handled sooner by
            # reclaim_stale, through the heartbeat lease).
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_connect_timeout": settings.broker_connect_timeout_s,
            "socket_timeout": max(settings.broker_connect_timeout_s, 5.0),
        }
    return config


def make_celery(settings: Settings, name: str = "toonforge") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class JobQueue:
    """Sends jobs to the broker. Create one per process (it pools broker connections)."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)
        if app is None and not is_embedded(settings):
            # A send is one short exchange: wait for the broker's answer no longer than for
            # the connection. With the consumer's 5 s floor (celery_config) a broker that
            # accepts connections and never answers held POST /jobs/finetune for 5 s at the
            # 2 s default (2.5x); now it is refused after ~1x broker_connect_timeout_s.
            options = dict(self.app.conf.broker_transport_options or {})
            options["socket_timeout"] = settings.broker_connect_timeout_s
            # kombu retries a refused connection after 2 s, then checks the deadline: a
            # dead broker took 2 s whatever the timeout. Retry sooner so the deadline holds.
            step = min(0.25, settings.broker_connect_timeout_s / 4)
            options.update(interval_start=0, interval_step=step, interval_max=step)
            self.app.conf.broker_transport_options = options

    def enqueue_finetune(self, job_id: str) -> None:
        """Send the job to the workers; ``BrokerUnavailable`` when the broker refuses it."""
        try:
            # retry=False: fail fast and let the caller answer 503; the job row is not
            # committed unless this returns.
            self.app.send_task(FINETUNE_TASK, args=[job_id], queue=self.settings.job_queue,
                               retry=False, ignore_result=True)
        except Exception as exc:
            # Transport libraries raise their own types (redis.exceptions.ConnectionError is
            # not an OSError); any failure to hand the message over means the same thing.
            # The client learns the kind of failure; the broker's address and the library's
            # wording go to the log only.
            log.warning("the broker did not take job %s: %r", job_id, exc)
            raise BrokerUnavailable(
                f"the job broker is unavailable ({type(exc).__name__}); nothing was recorded"
            ) from exc

    def close(self) -> None:
        self.app.close()


def create_and_enqueue(
    repo: JobRepository,
    request: FinetuneRequest,
    idempotency_key: str | None = None,
    *,
    queue: JobQueue,
    stores: Stores | None = None,
    owner_key: str | None = None,
    admit: Callable[[], None] | None = None,
    checked: bool = False,
) -> tuple[JobRecord, bool]:
    """Create the job and send it, in one transaction: the row is committed only after the
    broker accepted the message, so a broker outage writes nothing.

    With ``stores`` the dataset and models it names are checked first (``checked``: the
    caller did that already), and the dataset once more under the dataset lock
    (jobs/dataset_lock.py), so a delete that won the race fails the acceptance cleanly.
    Returns (job, created); a repeated idempotency key returns the existing job unsent.
    Raises ``InvalidJobRequest``, ``IdempotencyConflict`` or ``BrokerUnavailable``.
    """
    if stores is not None and not checked:
        request = check_references(request, stores)

    def before_commit(job: JobRecord) -> None:
        if stores is not None:
            check_dataset(request, stores)
        queue.enqueue_finetune(job.id)

    return repo.create(request, idempotency_key, owner_key=owner_key, admit=admit,
                       before_commit=before_commit)


def resume_and_enqueue(repo: JobRepository, job_id: str, queue: JobQueue,
                       artifacts: JobArtifacts, owner_key: str | None = None,
                       admit: Callable[[], None] | None = None) -> tuple[JobRecord, bool]:
    """Continue a failed or cancelled job from its last checkpoint, as a new job.

    The new job has the old one's request and ``resumed_from`` naming it; the old job's
    checkpoint is copied to the new job's files (``artifacts``: the store directory or the
    object store) before the message is sent, so the worker resumes it exactly (the
    trainer's own resume path). Raises ``JobNotFound``, ``InvalidTransition`` (the job is
    not failed/cancelled, or left no checkpoint) or ``BrokerUnavailable``; on any failure
    nothing is recorded. Returns (job, True).
    """
    old = repo.get(job_id)
    if old.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidTransition(job_id, old.status, "resumed (only a failed or cancelled job"
                                " can be)")
    if not artifacts.has_checkpoint(job_id):
        raise InvalidTransition(job_id, f"{old.status} without a checkpoint",
                                "resumed (it stopped before its first checkpoint: start a"
                                " new job)")
    request = FinetuneRequest(
        task=old.task, dataset_id=old.dataset_id, base=old.base,
        target_model=old.target_model, hyperparameters=dict(old.hyperparameters or {}),
        auto_activate=old.auto_activate, webhook_url=old.webhook_url,
    )

    def prepare_and_send(job: JobRecord) -> None:
        try:
            artifacts.copy_checkpoint(job_id, job.id)
            queue.enqueue_finetune(job.id)
        except BaseException:
            artifacts.discard(job.id)
            raise

    return repo.create(request, None, before_commit=prepare_and_send, resumed_from=job_id,
                       owner_key=owner_key, admit=admit)


def requeue_stale_jobs(repo: JobRepository, queue: JobQueue) -> ReclaimResult:
    """Re-send jobs whose worker was lost, fail those out of attempts, cancel those whose
    cancel was requested. Any process may call it; the compare-and-set makes repeats
    harmless."""
    settings = queue.settings
    result = repo.reclaim_stale(settings.job_lease_s, settings.job_max_attempts,
                                requeue=queue.enqueue_finetune)
    if result.requeued or result.failed or result.cancelled:
        log.warning("reclaimed stale jobs: requeued=%s failed=%s cancelled=%s",
                    result.requeued, result.failed, result.cancelled)
    return result
