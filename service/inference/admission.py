"""Admission: how many requests the pool runs and lets wait, and the memory they hold.

At most ``max_concurrency`` requests run and at most ``max_queued`` more wait; the next one
is refused at once with 503 ``overloaded`` and a ``Retry-After``, so a burst can never hold
more than that many uploads or decoded images. A slot can also reserve a request's working
memory from the ``MemoryBudget`` (budget.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator

from core.errors import DomainError
from core.settings import Settings
from service.inference.budget import MB, MemoryBudget, RequestMemory
from service.metrics import REQUESTS_SHED

# Set while a request holds an admission ticket, so the slot it takes later in the same
# task does not count it twice.
_ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted", default=False)


class Overloaded(DomainError):
    """More requests than the pool runs plus the ones it lets wait: retry later."""

    code = "overloaded"
    http_status = 503

    def __init__(self, admitted: int, retry_after_s: int) -> None:
        super().__init__(
            f"the server is at capacity ({admitted} requests running or waiting);"
            f" retry in {retry_after_s} s", {"retry_after_s": retry_after_s})
        # Sent as response headers by the error handler (service/errors.py).
        self.headers = {"Retry-After": str(retry_after_s)}


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = MemoryBudget(settings.memory_budget_mb * MB, settings.memory_request_mb * MB,
                                   settings.memory_wait_s, settings.overload_retry_after_s)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self.admitted = 0
        self.slot_waiting = 0
        self.slot_active = 0
        self.reading_upload = 0
        self._quiet_since = time.monotonic()

    @property
    def quiet_since(self) -> float | None:
        """When the last admitted request ended (monotonic), or None while one runs."""
        return None if self.admitted else self._quiet_since

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Admit one request, or refuse it at once with 503 ``overloaded``.

        ``max_concurrency`` requests run and ``max_queued`` more may wait; routes take the
        ticket before they read the upload, so what a burst holds in memory (bodies, then
        decoded images) is bounded by those two numbers, not by the number of clients.
        Re-entrant within one request (``slot`` takes one when the route did not).
        """
        if _ADMITTED.get():
            yield
            return
        limit = self.settings.max_concurrency + self.settings.max_queued
        if self.admitted >= limit:
            REQUESTS_SHED.inc()
            raise Overloaded(self.admitted, self.settings.overload_retry_after_s)
        self.admitted += 1
        token = _ADMITTED.set(True)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self.admitted -= 1
            if self.admitted == 0:
                self._quiet_since = time.monotonic()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Count an admitted request as receiving its upload (/metrics)."""
        self.reading_upload += 1
        try:
            yield
        finally:
            self.reading_upload -= 1

    @contextlib.asynccontextmanager
    async def slot(self, memory: RequestMemory | None = None, parameter: str = "image"
                   ) -> AsyncIterator[None]:
        """Bound the requests being processed at once (Settings.max_concurrency) and, with
        ``memory``, the working memory they hold (``budget``: waits, then 503)."""
        async with self.admit():
            if memory is not None and memory.source_pixels > self.settings.max_pixels:
                memory = None  # the decode refuses it from its header (too_many_pixels)
            if memory is not None:
                self.budget.check(memory, parameter)  # 422 before waiting for anything
            self.slot_waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.slot_waiting -= 1
            self.slot_active += 1
            try:
                if memory is None:
                    yield
                else:
                    async with self.budget.reserve(memory, parameter):
                        yield
            finally:
                self.slot_active -= 1
                self._slots.release()
