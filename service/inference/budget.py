"""Memory per inference request: a worst-case estimate, reserved from a per-process budget.

Every request that runs a graph reserves, before it decodes anything, what it may hold at
its peak (``RequestMemory``): the decoded upload, the graph's arena for the input it will
be fed, the graph's input and output arrays, and the answer it encodes. The reservations of
all running requests never exceed ``memory_budget_mb``; a request that does not fit waits
(first come, first served) for at most ``memory_wait_s`` and is then answered 503
``overloaded`` with a ``Retry-After``, so a burst of large inputs queues instead of taking
the process out of memory. One request may reserve at most ``memory_request_mb``: a graph
whose input size a request chooses (cartoonize's ``max_side``) is fed a smaller input when
the one asked for would not fit, and anything else beyond it is a 422 naming the limit.

What a graph holds per input value is data of its family (``GraphMemory`` on the task
spec, ``TaskSpec.memory``), measured on the family's real architecture by bench/memory.py;
a family that declares none gets ``DEFAULT_GRAPH_MEMORY``, sized for the largest built-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.errors import DomainError, InvalidParameter
from service.imaging import declared_size
from service.inference.sessions import LoadedVersion
from tasks import GraphMemory, TaskSpec

MB = 1024 * 1024
# Decoding holds the image (RGBA at most) and one mode conversion of it beside.
DECODE_BYTES_PER_PIXEL = 8
# An answer the size of the input: the image, its resize or alpha composite, and the
# encoded bytes (an incompressible PNG is as large as the pixels).
ANSWER_BYTES_PER_PIXEL = 12
# The graph's input and output arrays (float32) beside its arena, per input value.
ARRAY_BYTES_PER_VALUE = 8
# The peak of a family with no measurements: above every built-in (bench/memory.py).
DEFAULT_GRAPH_MEMORY = GraphMemory(per_input_value={"fp32": 1000.0, "int8": 1000.0},
                                   fixed_bytes=64 * MB)


class MemoryBusy(DomainError):
    """The process's memory budget stayed taken for longer than a request may wait."""

    code = "overloaded"
    http_status = 503

    def __init__(self, needed: int, wait_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"the server's memory budget is taken by running requests (this one needs"
            f" {math.ceil(needed / MB)} MB and waited {wait_s:g} s); retry in"
            f" {retry_after_s} s", {"retry_after_s": retry_after_s})
        self.headers = {"Retry-After": str(retry_after_s)}


def graph_memory(spec: TaskSpec, role: str) -> GraphMemory:
    """The family's measured memory model of one graph role, or the generic default."""
    return spec.memory.get(role, DEFAULT_GRAPH_MEMORY)


@dataclass
class RequestMemory:
    """What one request may hold at its peak, by stage (bytes)."""

    decode: int = 0
    graph: int = 0
    answer: int = 0
    # Pixels the upload's header declares (beyond max_pixels the decode refuses it first).
    source_pixels: int = 0

    @property
    def total(self) -> int:
        return self.decode + self.graph + self.answer

    @classmethod
    def of(cls, model: GraphMemory, precision: str, *, source_pixels: int = 0,
           graph_values: int = 0, answer_pixels: int = 0) -> RequestMemory:
        """An image request: ``source_pixels`` decoded, a graph fed ``graph_values``
        input values, an answer of ``answer_pixels``."""
        return cls(DECODE_BYTES_PER_PIXEL * source_pixels,
                   model.run_bytes(graph_values, precision)
                   + ARRAY_BYTES_PER_VALUE * graph_values,
                   ANSWER_BYTES_PER_PIXEL * answer_pixels, source_pixels)


def largest_fitting(limit: int, cost: Callable[[int], int], low: int, high: int) -> int:
    """The largest ``x`` in ``[low, high]`` with ``cost(x) <= limit`` (``cost`` growing);
    ``low`` when none fits."""
    if cost(high) <= limit:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle) <= limit:
            low = middle
        else:
            high = middle
    return low


@dataclass
class _Waiter:
    nbytes: int
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class MemoryBudget:
    """Bytes the running requests of one process may reserve, granted in arrival order
    (a large request is not starved by a stream of small ones). Event-loop only."""

    def __init__(self, total_bytes: int, request_bytes: int, wait_s: float,
                 retry_after_s: int) -> None:
        self.total = total_bytes
        self.per_request = min(request_bytes, total_bytes)
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.reserved = 0
        self.peak = 0  # the highest sum of reservations since start (/metrics)
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def check(self, need: RequestMemory, parameter: str = "image") -> None:
        """422 when one request would need more than ``memory_request_mb``."""
        if need.total > self.per_request:
            raise InvalidParameter(
                parameter, f"this request would need about {math.ceil(need.total / MB)} MB of"
                f" working memory (decode {math.ceil(need.decode / MB)}, graph"
                f" {math.ceil(need.graph / MB)}, answer {math.ceil(need.answer / MB)}); one"
                f" request may use {self.per_request // MB} MB (TOONFORGE_MEMORY_REQUEST_MB):"
                " send a smaller image or ask for less",
                {"needed_mb": math.ceil(need.total / MB), "limit_mb": self.per_request // MB})

    @contextlib.asynccontextmanager
    async def reserve(self, need: RequestMemory, parameter: str = "image"
                      ) -> AsyncIterator[None]:
        """Hold ``need.total`` bytes of the budget for the block (waiting for them)."""
        self.check(need, parameter)
        nbytes = need.total
        if self._waiters or self.reserved + nbytes > self.total:
            await self._wait(nbytes)
        else:
            self._take(nbytes)
        try:
            yield
        finally:
            self.reserved -= nbytes
            self._grant()

    def _take(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak = max(self.peak, self.reserved)

    async def _wait(self, nbytes: int) -> None:
        waiter = _Waiter(nbytes)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), self.wait_s)
        except TimeoutError:
            if waiter.granted.done():  # granted as the wait ran out: keep it
                return
            self._waiters.remove(waiter)
            self._grant()  # a small request behind this one may fit now
            raise MemoryBusy(nbytes, self.wait_s, self.retry_after_s) from None
        except asyncio.CancelledError:
            if waiter.granted.done():
                self.reserved -= nbytes
            else:
                self._waiters.remove(waiter)
            self._grant()
            raise

    def _grant(self) -> None:
        while self._waiters and self.reserved + self._waiters[0].nbytes <= self.total:
            waiter = self._waiters.popleft()
            self._take(waiter.nbytes)
            waiter.granted.set_result(None)



def fixed_input_values(version: LoadedVersion, role: str) -> int:
    """Values of one row of the graph's first input when the manifest fixes its shape
    (matte's 3x320x320, a latent of 100); 0 when an axis is symbolic."""
    dims = version.manifest.graphs[role].inputs[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return 0
    return math.prod(int(d) for d in dims)


def request_memory(version: LoadedVersion, role: str, *, data: bytes | None = None,
                   rows: int = 1, graph_values: int | None = None,
                   answer_pixels: int | None = None) -> RequestMemory:
    """The estimate of a request to ``version``'s ``role`` graph: ``data`` is decoded (its
    header's size, no pixel decoded here), the graph is fed ``graph_values`` input values
    (default: ``rows`` rows of its fixed shape, else three per decoded pixel), the answer
    holds ``answer_pixels`` (default: as many as the upload)."""
    width, height = declared_size(data) if data is not None else (0, 0)
    pixels = width * height
    if graph_values is None:
        graph_values = rows * fixed_input_values(version, role) or 3 * pixels
    return RequestMemory.of(graph_memory(version.spec, role), version.precision,
                            source_pixels=pixels, graph_values=graph_values,
                            answer_pixels=pixels if answer_pixels is None else answer_pixels)
