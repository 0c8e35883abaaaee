"""Experiment tracking of fine-tune jobs: an MLflow run and TensorBoard event files per job.

Optional, and never in the job's way:
- built from settings (``mlflow_tracking_uri``, ``tensorboard_dir``); with neither set
  nothing is started;
- the trainer's epoch events are copied onto a queue that one thread per job sends on, so
  a slow or unreachable tracking server neither slows nor fails training: a sink whose call
  fails is logged (warning) and switched off for the rest of the job;
- one MLflow run per job, found again when the job is redelivered (the run id on the job
  row, else the run whose ``jobs`` tag names the job) and continued by a job resumed from
  another one (the run whose ``jobs`` tag names that one), so a job's history is one run;
- only the job's process logs: a multi-device job's ranks report through rank 0's events,
  which reach this process (worker/training/distributed.py).

The runner opens a :class:`JobTracker` around a job and hands it the job's terminal row
(worker/runner.py); ``train()`` adds its listener to the job row's with :func:`listen`
(worker/finetune.py). What is sent, and the sinks that send it: tracking_sinks.py.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from jobs.records import JobRecord
from tasks import CommonHyperparameters
from worker.training.tracking_sinks import (
    EpochPoint,
    JobInfo,
    Outcome,
    Sink,
    build_sinks,
    epoch_metrics,
    short,
)
from worker.training.trainers.context import ProgressEvent

if TYPE_CHECKING:
    from jobs.repository import JobRepository

log = logging.getLogger(__name__)

# How long the end of a job waits for the tracking thread to send what is queued.
FLUSH_TIMEOUT_S = 30.0

# ---------------------------------------------------------------- one job's tracker

_CURRENT: contextvars.ContextVar[JobTracker | None] = contextvars.ContextVar(
    "toonforge_job_tracker", default=None)


class JobTracker:
    """One job's tracking, as a context manager around the job's run on this worker.

    ``on_progress`` is the trainer's listener (it never raises and never waits on a
    server); ``finish(row)`` gives the job's terminal row before the block ends; the end of
    the block sends what is queued (waiting at most ``flush_timeout_s``) and closes the run,
    as finished, failed or killed, or left open when the job did not end here."""

    def __init__(self, job: JobInfo, sinks: Iterable[Sink],
                 on_link: Callable[[dict[str, Any]], None] | None = None,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        self.job, self.on_link, self.flush_timeout_s = job, on_link, flush_timeout_s
        self._live = list(sinks)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._outcome: Outcome | None = None
        self._spool: Path | None = None
        self._token: contextvars.Token[JobTracker | None] | None = None
        # In a copy of this context, so its log lines carry the job id (worker/logs.py).
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._drain,), name=f"tracking-{job.id[:8]}",
                                        daemon=True)

    @property
    def active(self) -> bool:
        return bool(self._live)

    def __enter__(self) -> JobTracker:
        if self._live:
            try:
                if any(s.uses_samples for s in self._live):
                    self._spool = Path(tempfile.mkdtemp(
                        prefix=f"toonforge-tracking-{self.job.id}-"))
                self._queue.put(self._start)
                self._thread.start()
            except Exception as exc:  # no disk for the copies, no thread: no tracking
                log.warning("job %s: tracking is off: %s", self.job.id, short(exc))
                self._live.clear()
                if self._spool is not None:
                    shutil.rmtree(self._spool, ignore_errors=True)
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        if not self._thread.is_alive():
            return
        outcome = self._outcome
        self._queue.put(lambda: self._each("finish", lambda s: s.finish(outcome)))
        self._queue.put(None)
        self._thread.join(self.flush_timeout_s)
        if self._thread.is_alive():
            self._abandoned.set()
            log.warning("job %s: tracking did not finish within %.0f s; the rest is dropped",
                        self.job.id, self.flush_timeout_s)

    def finish(self, job: JobRecord | None) -> None:
        """The job's terminal row (None: it did not end on this worker)."""
        try:
            self._outcome = Outcome.from_record(job) if job is not None else None
        except Exception as exc:
            log.warning("job %s: its end is not tracked: %s", self.job.id, short(exc))

    def on_progress(self, event: ProgressEvent) -> None:
        if event.kind != "epoch" or not self._live or not self._thread.is_alive():
            return
        try:
            point = EpochPoint(event.epoch, epoch_metrics(event), self._copy(event.samples))
        except Exception as exc:
            log.warning("job %s: epoch %d not tracked: %s", self.job.id, event.epoch,
                        short(exc))
            return
        self._queue.put(lambda: self._epoch(point))

    def _copy(self, samples: list[Path]) -> list[Path]:
        """Copies the sink thread uploads later: the job may move or drop its own files."""
        if self._spool is None:
            return []
        copies = []
        for path in samples:
            target = self._spool / Path(path).name
            try:
                shutil.copyfile(path, target)
            except OSError as exc:
                log.warning("job %s: sample %s not tracked: %s", self.job.id,
                            Path(path).name, short(exc))
                continue
            copies.append(target)
        return copies

    # -- the tracking thread

    def _drain(self) -> None:
        try:
            while not self._abandoned.is_set():
                item = self._queue.get()
                if item is None or self._abandoned.is_set():
                    return
                item()
        finally:
            if self._spool is not None:
                shutil.rmtree(self._spool, ignore_errors=True)

    def _start(self) -> None:
        links: dict[str, Any] = {}
        for sink in list(self._live):
            link = self._call(sink, "start", lambda s: s.start(self.job))
            links.update(link or {})
        if links and self.on_link is not None:
            try:
                self.on_link(links)
            except Exception as exc:
                log.warning("job %s: could not record the tracking link: %s", self.job.id,
                            short(exc))

    def _epoch(self, point: EpochPoint) -> None:
        self._each("epoch", lambda s: s.epoch(point))
        for copy in point.samples:  # sent (or not): the spool keeps no more than an epoch
            copy.unlink(missing_ok=True)

    def _each(self, what: str, call: Callable[[Sink], Any]) -> None:
        for sink in list(self._live):
            self._call(sink, what, call)

    def _call(self, sink: Sink, what: str, call: Callable[[Sink], Any]) -> Any:
        try:
            return call(sink)
        except Exception as exc:
            log.warning("job %s: %s tracking failed at %s (%s); it is off for the rest of"
                        " the job, which goes on", self.job.id, sink.name, what, short(exc))
            log.debug("tracking failure", exc_info=True)
            self._live.remove(sink)
            return None


def job_tracker(settings: Settings, job: JobRecord, repo: JobRepository | None = None,
                worker_id: str | None = None, hp: CommonHyperparameters | None = None
                ) -> JobTracker:
    """The tracker of ``job`` on this worker (one without sinks when nothing is configured);
    with ``repo`` and ``worker_id`` it records the run's link on the job row; ``hp`` are
    the job's validated hyper-parameters (JobInfo.from_record)."""
    on_link: Callable[[dict[str, Any]], None] | None = None
    if repo is not None and worker_id is not None:
        row, wid = repo, worker_id

        def record(link: dict[str, Any]) -> None:
            if not row.set_tracking(job.id, wid, link):
                log.warning("job %s: tracking link not recorded (the job is no longer this"
                            " worker's)", job.id)

        on_link = record
    try:
        info, sinks = JobInfo.from_record(job, hp), build_sinks(settings)
    except Exception as exc:  # tracking never stops a job from starting
        log.warning("job %s: tracking is off: %s", job.id, short(exc))
        info, sinks = JobInfo(job.id, job.task, job.target_model, job.base, job.dataset_id,
                              job.attempts), []
    return JobTracker(info, sinks, on_link)


def listen(on_progress: Callable[[ProgressEvent], None]) -> Callable[[ProgressEvent], None]:
    """``on_progress``, then the open job tracker's listener (the row first: tracking is a
    copy); ``on_progress`` itself when no tracker is open in this context."""
    tracker = _CURRENT.get()
    if tracker is None or not tracker.active:
        return on_progress

    def both(event: ProgressEvent) -> None:
        on_progress(event)
        tracker.on_progress(event)

    return both
