"""Dynamic batching for fixed-shape graphs: many requests, one onnxruntime run.

Requests put their (batch-1, usually) inputs on a queue and get a Future. One collector
thread per graph takes the first waiting request, gathers more until ``max_size`` rows or
``max_delay_s`` have passed, concatenates along the batch axis, runs once and splits the
outputs back. It only pays when requests overlap; with batching off the pool never builds
a Batcher, so that path costs nothing.

A batch waits for more rows only while another request is making its inputs for the same
graph (``preparing``, counted by the pipeline around its prepare stage): with none on the
way it runs at once, so a lone request never sits out the collection window (2 ms by
default: a fifth of an INT8 GoogLeNet run).

While requests queue, ``runs`` collectors (``Settings.batch_parallel_runs``) take batches
from the same queue and run them at once on the same session (onnxruntime's ``run`` is
thread-safe): one run's serial stretches and thread hand-overs leave cores idle that another
run fills. A lone request still runs alone, on all the session's intra-op threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]


@dataclass
class _Request:
    feeds: Feeds
    rows: int
    future: Future[Feeds] = field(default_factory=Future)


class BatcherClosed(RuntimeError):
    pass


class Batcher:
    """Groups concurrent calls of ``run`` (a graph whose axis 0 is the batch)."""

    def __init__(self, run: RunFn, max_size: int, max_delay_s: float, name: str,
                 on_batch: Callable[[int], None] | None = None, runs: int = 1) -> None:
        self._run = run
        self._on_batch = on_batch  # told the rows of every run (the batch-size metric)
        self._max_size = max(1, max_size)
        self._max_delay_s = max(0.0, max_delay_s)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = False
        self._preparing = 0  # requests making inputs for this graph (see ``preparing``)
        self._preparing_lock = threading.Lock()
        self._runs = max(1, runs)
        self._live_lock = threading.Lock()
        self._live = self._runs  # collector threads not yet finished
        self._threads = [
            threading.Thread(target=self._collect, daemon=True,
                             name=f"batcher-{name}" + (f"-{i}" if self._runs > 1 else ""))
            for i in range(self._runs)]
        for thread in self._threads:
            thread.start()

    def submit(self, feeds: Feeds) -> Future[Feeds]:
        if self._closed:
            raise BatcherClosed("batcher is closed")
        rows = next(iter(feeds.values())).shape[0]
        request = _Request(feeds, rows)
        self._queue.put(request)
        return request.future

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Count a request that is making its inputs for this graph and will submit them:
        a batch being collected waits for it (up to ``max_delay_s``), and for nothing
        when no request is on the way."""
        with self._preparing_lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._preparing_lock:
                self._preparing -= 1

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken into a batch (approximate, for metrics)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop after serving whatever is already queued."""
        self._closed = True
        for _ in range(self._runs):  # one stop mark per collector
            self._queue.put(None)

    # ------------------------------------------------------------------ collector thread
    def _collect(self) -> None:
        try:
            self._collect_until_closed()
        finally:
            # ``run`` is the graph's bound method and the graph holds this batcher: a cycle
            # only the cyclic GC would free, late, with the session and its whole arena
            # (gigabytes after a burst) still allocated. Drop our half as the last
            # collector ends (the others may still be serving).
            with self._live_lock:
                self._live -= 1
                last = self._live == 0
            if last:
                self._run = _closed_run
                self._on_batch = None

    def _collect_until_closed(self) -> None:
        carry: _Request | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            batch, rows, stop = [first], first.rows, False
            deadline = time.monotonic() + self._max_delay_s
            while rows < self._max_size:
                if self._preparing == 0 and self._queue.empty():
                    break  # nothing else is on the way: waiting would only add latency
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else (
                        self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if rows + nxt.rows > self._max_size:
                    carry = nxt  # starts the next batch rather than overflowing this one
                    break
                batch.append(nxt)
                rows += nxt.rows
            self._serve(batch)
            if stop:
                self._drain()
                return

    def _drain(self) -> None:
        """Serve requests that raced with close(): each alone."""
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                self._serve([request])

    def _serve(self, batch: list[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        if self._on_batch is not None:
            self._on_batch(sum(r.rows for r in live))
        try:
            if len(live) == 1:
                outputs = [self._run(live[0].feeds)]
            else:
                outputs = self._split(live, self._run(self._concat(live)))
        except BaseException as exc:  # every waiter learns of the failure
            for request in live:
                request.future.set_exception(exc)
            return
        for request, result in zip(live, outputs, strict=True):
            request.future.set_result(result)

    @staticmethod
    def _concat(batch: list[_Request]) -> Feeds:
        names = batch[0].feeds.keys()
        return {n: np.concatenate([r.feeds[n] for r in batch], axis=0) for n in names}

    @staticmethod
    def _split(batch: list[_Request], outputs: Feeds) -> list[Feeds]:
        bounds = np.cumsum([r.rows for r in batch])[:-1]
        pieces = {name: np.split(value, bounds, axis=0) for name, value in outputs.items()}
        return [{name: pieces[name][i] for name in outputs} for i in range(len(batch))]


def _closed_run(feeds: Feeds) -> Feeds:
    raise BatcherClosed("batcher is closed")
