"""What a running job and its database row tell each other while it trains.

``JobControl`` is torch-free and owns, for one claimed job:
- the heartbeat thread that renews the lease (a worker that stops beating is reclaimed);
- ``should_cancel()``: the trainer calls it at every step, so the cancel flag is cached and
  re-read at most every ``job_cancel_poll_s``; losing the lease or a warm shutdown also stop
  the trainer (it then writes a checkpoint at that step);
- ``on_progress(event)``: trainer progress -> row + event, throttled (epoch ends always go).
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from jobs.repository import JobRepository, ProgressUpdate

log = logging.getLogger(__name__)

# Set by a warm shutdown of the worker process (SIGTERM): the running job checkpoints at its
# next step and goes back to the queue instead of holding the shutdown for hours.
SHUTDOWN = threading.Event()


class ProgressLike(Protocol):
    """The trainers' ProgressEvent (worker/training/trainers/base.py), without torch."""

    kind: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    losses: dict[str, float]
    val_metrics: dict[str, float]
    samples: list[Path]


class JobControl:
    def __init__(
        self,
        repo: JobRepository,
        job_id: str,
        worker_id: str,
        *,
        heartbeat_s: float,
        cancel_poll_s: float,
        progress_interval_s: float,
        work_dir: Path | None = None,
    ) -> None:
        self.repo, self.job_id, self.worker_id = repo, job_id, worker_id
        self.heartbeat_s = heartbeat_s
        self.cancel_poll_s = cancel_poll_s
        self.progress_interval_s = progress_interval_s
        self.work_dir = work_dir
        self.lease_lost = threading.Event()
        self._cancel_cached = False
        self._cancel_read_at = -math.inf
        self._last_write = -math.inf
        self._rate_origin: tuple[float, int] | None = None  # (time, step) of the first event
        self._stop = threading.Event()
        # In a copy of this context, so its log lines carry the job id too (worker/logs.py).
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._beat,), name=f"heartbeat-{job_id[:8]}",
                                        daemon=True)

    # ----- lifecycle
    def __enter__(self) -> JobControl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.heartbeat_s + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.repo.heartbeat(self.job_id, self.worker_id):
                    log.error("job %s: lease lost (another worker took it over, or it was "
                              "finished elsewhere); stopping", self.job_id)
                    self.lease_lost.set()
                    return
            except Exception:  # a database hiccup must not kill the beat; the lease is long
                log.exception("job %s: heartbeat failed; retrying", self.job_id)

    # ----- stop signals
    @property
    def user_cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancel_cached and now - self._cancel_read_at >= self.cancel_poll_s:
            self._cancel_read_at = now
            try:
                self._cancel_cached = self.repo.is_cancel_requested(self.job_id)
            except Exception:
                log.exception("job %s: could not read the cancel flag", self.job_id)
        return self._cancel_cached

    @property
    def shutting_down(self) -> bool:
        return SHUTDOWN.is_set()

    def should_cancel(self) -> bool:
        return self.lease_lost.is_set() or self.shutting_down or self.user_cancelled

    # ----- progress
    def on_progress(self, event: ProgressLike) -> None:
        now = time.monotonic()
        if self._rate_origin is None:
            self._rate_origin = (now, event.step - 1)
        is_epoch = event.kind == "epoch"
        if not is_epoch and now - self._last_write < self.progress_interval_s:
            return
        self._last_write = now
        update = ProgressUpdate(
            # the row counts completed epochs; a step event is inside epoch `event.epoch`
            epoch=event.epoch if is_epoch else event.epoch - 1,
            total_epochs=event.epochs,
            step=event.step,
            total_steps=event.total_steps,
            losses=dict(event.losses),
            val_metrics=dict(event.val_metrics) if is_epoch and event.val_metrics else None,
            eta_seconds=self._eta(now, event.step, event.total_steps),
            extra={"kind": event.kind},
        )
        try:
            if not self.repo.record_progress(self.job_id, self.worker_id, update):
                self.lease_lost.set()
                return
            if is_epoch and event.samples:
                self.repo.append_event(self.job_id, "sample", {
                    "epoch": event.epoch, "files": [self._relative(p) for p in event.samples]})
        except Exception:  # progress is best effort; the heartbeat guards the lease
            log.exception("job %s: could not record progress", self.job_id)

    def _eta(self, now: float, step: int, total: int) -> float | None:
        if self._rate_origin is None:
            return None
        t0, s0 = self._rate_origin
        done = step - s0
        if done <= 0 or now <= t0:
            return None
        return round((total - step) * (now - t0) / done, 1)

    def _relative(self, path: Path) -> str:
        if self.work_dir is not None:
            try:
                return str(Path(path).relative_to(self.work_dir))
            except ValueError:
                pass
        return str(path)

    def log_event(self, message: str, **data: Any) -> None:
        try:
            self.repo.append_event(self.job_id, "log", {"message": message, **data})
        except Exception:
            log.exception("job %s: could not append a log event", self.job_id)
