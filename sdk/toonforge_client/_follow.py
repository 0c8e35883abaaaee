"""Following a job to its end, without I/O: the one state machine behind both clients'
``wait_for_job``.

``follow_job(...)`` is a generator of *steps*: send this request, open the job's event stream,
read its next event, close it, sleep this long, tell the caller about this update. A driver
performs each step and answers it: ``steps.send(result)``, or ``steps.throw(error)`` when the
step failed. ``Client`` drives it with httpx.Client and time.sleep, ``AsyncClient`` with
httpx.AsyncClient and asyncio.sleep; the drivers hold no decisions of their own.

What it decides: read the event stream first (``source="stream"`` updates); when the stream
cannot be opened, breaks, or says something we cannot read, poll ``GET /jobs/{id}`` instead
(``source="poll"`` updates, only when the job changed); an unknown job is final; past the
deadline raises ``WaitTimeoutError``; a job that did not succeed raises ``JobFailedError``
unless asked not to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from toonforge_client import _calls
from toonforge_client.errors import JobFailedError, NotFoundError, ToonforgeError, WaitTimeoutError
from toonforge_client.types import JobEvent, JobUpdate, JobView, apply_event, is_terminal

log = logging.getLogger("toonforge_client")

MIN_STREAM_READ_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class Send:
    """Make this request; answer with its result."""

    call: _calls.Call[JobView]


@dataclass(frozen=True)
class OpenEvents:
    """Open the job's event stream (a read waits at most ``read_timeout``); answer None."""

    job_id: str
    read_timeout: float


@dataclass(frozen=True)
class NextEvent:
    """Read the stream's next event; answer it, or None when the stream has ended."""


@dataclass(frozen=True)
class CloseEvents:
    """Close the event stream; answer None. (A driver also closes a stream still open when
    the generator finishes, however it finishes.)"""


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Notify:
    """Hand ``update`` to the caller's ``on_progress``, if there is one."""

    update: JobUpdate


Step = Send | OpenEvents | NextEvent | CloseEvents | Sleep | Notify
Steps = Generator[Step, Any, JobView]


def is_terminal_event(event: JobEvent) -> bool:
    return event["kind"] == "status" and is_terminal(str(event["data"].get("status")))


def stream_error_is_final(exc: ToonforgeError) -> bool:
    """A stream failure that polling would not fix: the job does not exist."""
    return isinstance(exc, NotFoundError) and exc.code == "job_not_found"


@dataclass(frozen=True)
class WaitOptions:
    """``wait_for_job``'s knobs (see ``Client.wait_for_job``)."""

    timeout: float | None = None
    poll_interval: float = 1.0
    stream: bool = True
    stream_read_timeout: float = 60.0
    raise_on_failure: bool = True


def follow_job(job_id: str, options: WaitOptions,
               clock: Callable[[], float] = time.monotonic) -> Steps:
    """The steps of following job ``job_id`` to its end; returns the finished job."""
    deadline = None if options.timeout is None else clock() + options.timeout
    waited_s = options.timeout or 0.0

    def remaining() -> float | None:
        return None if deadline is None else deadline - clock()

    job: JobView = yield Send(_calls.get_job(job_id))
    if options.stream and not is_terminal(job["status"]):
        left = remaining()
        read_timeout = options.stream_read_timeout if left is None else max(
            MIN_STREAM_READ_TIMEOUT_S, min(options.stream_read_timeout, left))
        job = yield from _read_stream(job, read_timeout, deadline, waited_s, clock)
        job = yield Send(_calls.get_job(job["id"]))
    last_seen = None
    while not is_terminal(job["status"]):
        left = remaining()
        if left is not None and left <= 0:
            raise WaitTimeoutError(dict(job), waited_s)
        yield Sleep(options.poll_interval if left is None else min(options.poll_interval, left))
        job = yield Send(_calls.get_job(job_id))
        if (job["updated_at"], job["status"]) != last_seen:
            yield Notify(JobUpdate(job, None, "poll"))
        last_seen = (job["updated_at"], job["status"])
    if options.raise_on_failure and job["status"] != "succeeded":
        raise JobFailedError(dict(job))
    return job


def _read_stream(job: JobView, read_timeout: float, deadline: float | None, waited_s: float,
                 clock: Callable[[], float]) -> Generator[Step, Any, JobView]:
    """The job as its events move it, until the terminal status event or the stream's end.
    The stream's failures are logged, not raised (the caller polls on), except for an
    unknown job or a passed deadline."""
    yield OpenEvents(job["id"], read_timeout)
    while True:
        try:
            event: JobEvent | None = yield NextEvent()
        except ToonforgeError as exc:
            if stream_error_is_final(exc):
                raise
            log.warning("event stream of job %s failed (%s); polling instead", job["id"], exc)
            break
        except ValueError as exc:  # not the event format we know
            log.warning("unreadable event stream of job %s (%s); polling instead",
                        job["id"], exc)
            break
        if event is None:
            break
        job = apply_event(job, event)
        yield Notify(JobUpdate(job, event, "stream"))
        if is_terminal_event(event):
            break
        if deadline is not None and clock() >= deadline:
            raise WaitTimeoutError(dict(job), waited_s)
    yield CloseEvents()
    return job
