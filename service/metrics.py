"""Prometheus metrics of the API process (docs/OPERATIONS.md lists every name).

Counters and histograms below are process-wide and live in prometheus_client's default
registry (next to its process_* and python_* metrics); the code that knows the event
updates them. Gauges that describe state (the pool's queues, the jobs table) are read when
/metrics is scraped, by the collectors of one app (``app_collectors``).

One process, one set of numbers: with several uvicorn processes, scrape each one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from jobs.records import JobRecord, utcnow
from jobs.states import JobStatus

log = logging.getLogger(__name__)

# ---- events (updated where they happen)
HTTP_LABELS = ("route", "method", "status", "model_version")
HTTP_REQUESTS = Counter(
    "toonforge_http_requests", "HTTP requests answered, by route template and model version.",
    HTTP_LABELS)
HTTP_LATENCY = Histogram(
    "toonforge_http_request_duration_seconds",
    "Time from receiving a request to the end of its response.", HTTP_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
HTTP_IN_FLIGHT = Gauge("toonforge_http_requests_in_flight",
                       "HTTP requests being handled now.")
BATCH_SIZE = Histogram(
    "toonforge_batch_size", "Rows per onnxruntime run of a dynamic batcher.",
    ("model_version", "graph"), buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
MODEL_RELOADS = Counter(
    "toonforge_model_reloads",
    "Versions swapped in as a model's served version (first load, activation, reload).",
    ("model",))
MODEL_RELOAD_FAILURES = Counter(
    "toonforge_model_reload_failures",
    "Active versions that failed to load (the previous one kept serving).", ("model",))
# Set on every swap: which version this replica serves, one series per model, so
# replicas that disagree after an activation show up side by side.
MODEL_SERVED_VERSION = Gauge(
    "toonforge_model_served_version",
    "The version of each model this process serves now (set on every swap).", ("model",))

# Requests refused before any work because the pool was full (503 overloaded): the signal
# to add replicas, apart from the 503s of other causes in toonforge_http_requests.
REQUESTS_SHED = Counter(
    "toonforge_requests_shed",
    "Requests refused at admission with 503 overloaded (running + waiting at the limit).")

# ---- state (read at scrape time)
JOBS_QUERY_TIMEOUT_S = 2.0
# Heartbeats older than this are left out: each worker restart is a new worker id.
HEARTBEAT_WINDOW = timedelta(hours=24)


@dataclass
class PoolBacklog:
    """What the inference pool has waiting (InferencePool.backlog())."""

    slot_waiting: int = 0
    slot_active: int = 0
    # Admitted requests still receiving their upload (they hold an admission ticket).
    reading: int = 0
    # Requests holding a slot that wait for their memory reservation, and the budget.
    memory_waiting: int = 0
    memory_reserved_bytes: int = 0
    memory_budget_bytes: int = 0
    # (model_version, graph) -> requests queued in that graph's batcher
    batchers: dict[tuple[str, str], int] = field(default_factory=dict)


class PoolCollector(Collector):
    """Queue depths of the inference pool; ``backlog`` returns None before it exists."""

    def __init__(self, backlog: Callable[[], PoolBacklog | None]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[Metric]:
        backlog = self._backlog() or PoolBacklog()
        waiting = GaugeMetricFamily(
            "toonforge_pool_requests_waiting",
            "Requests waiting for a pool slot (Settings.max_concurrency are served at once).")
        waiting.add_metric([], backlog.slot_waiting)
        active = GaugeMetricFamily("toonforge_pool_requests_active",
                                   "Requests holding a pool slot.")
        active.add_metric([], backlog.slot_active)
        reading = GaugeMetricFamily(
            "toonforge_pool_requests_reading",
            "Admitted requests still receiving their upload (before a slot).")
        reading.add_metric([], backlog.reading)
        memory_waiting = GaugeMetricFamily(
            "toonforge_memory_requests_waiting",
            "Requests waiting for their working-memory reservation (memory_budget_mb).")
        memory_waiting.add_metric([], backlog.memory_waiting)
        reserved = GaugeMetricFamily(
            "toonforge_memory_reserved_bytes",
            "Working memory reserved by running inference requests (worst-case estimates).")
        reserved.add_metric([], backlog.memory_reserved_bytes)
        budget = GaugeMetricFamily("toonforge_memory_budget_bytes",
                                   "The per-process working-memory budget (memory_budget_mb).")
        budget.add_metric([], backlog.memory_budget_bytes)
        batcher = GaugeMetricFamily(
            "toonforge_batcher_queue_depth",
            "Requests waiting in a dynamic batcher for their graph run.",
            labels=["model_version", "graph"])
        for (ref, graph), depth in sorted(backlog.batchers.items()):
            batcher.add_metric([ref, graph], depth)
        yield from (waiting, active, reading, memory_waiting, reserved, budget, batcher)


def _scrape_engine(url: str) -> Engine:
    """An engine of its own: short timeouts, and a scrape never takes the API's connections."""
    parsed = make_url(url)
    timeout = int(JOBS_QUERY_TIMEOUT_S)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": JOBS_QUERY_TIMEOUT_S,
                                                "check_same_thread": False})
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": max(timeout, 1),
                        "options": f"-c statement_timeout={int(JOBS_QUERY_TIMEOUT_S * 1000)}"}
    return create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True,
                         pool_timeout=JOBS_QUERY_TIMEOUT_S, connect_args=connect_args)


class JobsCollector(Collector):
    """Jobs by status and the newest heartbeat of each worker, from the jobs table.

    A scrape waits at most JOBS_QUERY_TIMEOUT_S for the database; when it cannot be read,
    only ``toonforge_jobs_scrape_error 1`` is reported and /metrics still answers.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: Engine | None = None
        # One query at a time: a hung database holds one thread, not one per scrape.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobs-metrics")

    def _query(self) -> tuple[dict[str, int], dict[str, float]]:
        if self._engine is None:
            self._engine = _scrape_engine(self._url)
        since = utcnow() - HEARTBEAT_WINDOW
        with self._engine.connect() as conn:
            counts = {status: int(n) for status, n in conn.execute(
                select(JobRecord.status, func.count()).group_by(JobRecord.status))}
            beats = {str(worker): at.timestamp() for worker, at in conn.execute(
                select(JobRecord.worker_id, func.max(JobRecord.heartbeat_at))
                .where(JobRecord.worker_id.is_not(None), JobRecord.heartbeat_at >= since)
                .group_by(JobRecord.worker_id)) if at is not None}
        return counts, beats

    def collect(self) -> Iterator[Metric]:
        error = GaugeMetricFamily(
            "toonforge_jobs_scrape_error",
            "1 when the jobs database could not be read for this scrape, else 0.")
        try:
            counts, beats = self._executor.submit(self._query).result(JOBS_QUERY_TIMEOUT_S)
        except FutureTimeout:
            log.warning("jobs metrics: the database did not answer in %.1fs",
                        JOBS_QUERY_TIMEOUT_S)
            error.add_metric([], 1)
            yield error
            return
        except Exception as exc:
            log.warning("jobs metrics: cannot read the jobs table: %s", exc)
            error.add_metric([], 1)
            yield error
            return
        error.add_metric([], 0)
        jobs = GaugeMetricFamily(
            "toonforge_jobs",
            "Jobs in the database by status; status=\"queued\" is the job queue depth.",
            labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.pop(status.value, 0))
        for unknown, n in counts.items():  # a status this code does not know yet
            jobs.add_metric([unknown], n)
        heartbeat = GaugeMetricFamily(
            "toonforge_worker_last_heartbeat_timestamp_seconds",
            "Unix time of the newest job heartbeat written by each worker (last 24 h).",
            labels=["worker_id"])
        for worker, at in sorted(beats.items()):
            heartbeat.add_metric([worker], at)
        yield from (error, jobs, heartbeat)


def app_collectors(backlog: Callable[[], PoolBacklog | None],
                   database_url: str) -> CollectorRegistry:
    """The scrape-time collectors of one app, in a registry of their own (no global state,
    so building several apps in one process never registers anything twice)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(backlog))
    registry.register(JobsCollector(database_url))
    return registry


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of the default registry followed by ``registries``."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))
