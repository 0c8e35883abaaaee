"""All settings, read once from the environment (prefix ``TOONFORGE_``) or a ``.env`` file.

The one place that reads the environment: the API, the worker, the job layer and the CLI
all take a ``Settings`` (``get_settings()`` in processes, an explicit instance in tests).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The broker URL scheme of the embedded (serverless) transport: kombu's filesystem queue.
EMBEDDED_BROKER_SCHEME = "filesystem"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOONFORGE_", env_file=".env", extra="ignore")

    # Where versions live (docs/ARCHITECTURE.md: model store).
    store_dir: Path = Path("data/store")
    host: str = "127.0.0.1"
    port: int = 8000
    # The model each task serves when a request names none; a task not listed here serves
    # its spec's default model (tasks/<task>.py).
    default_models: dict[str, str] = Field(default_factory=dict)
    # Extra model families (core/plugins.py): task-spec modules every process imports, and
    # worker modules (net + trainer) the worker imports too. Comma-separated in the env.
    task_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worker_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # ---- input limits
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked before decoding
    max_side_limit: int = 2048  # the largest max_side a cartoonize request may ask for

    # ---- onnxruntime
    # Execution providers in order of preference; unavailable ones are skipped.
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    ort_intra_op_threads: int = Field(2, ge=1)
    ort_inter_op_threads: int = Field(1, ge=1)
    # Threads that run decode / inference / encode off the event loop.
    worker_threads: int = Field(4, ge=1)

    # ---- CPU budget of the job worker beside the API (docs/DEPLOY.md "CPU budgets")
    # torch intra-op threads of the worker's training; None: OMP_NUM_THREADS when the
    # environment sets it, else the cores this process may use less ort_intra_op_threads
    # (the API's graph runs), at least 1: `make run` puts both on one host.
    train_threads: int | None = Field(None, ge=1)
    # torch inter-op threads of the worker (the nets' graphs have no parallel branches).
    train_interop_threads: int = Field(1, ge=1)
    # Niceness of the worker process (a higher one it was started with is kept): when the
    # cores are contended the API's requests get them first, training what is left.
    train_nice: int = Field(10, ge=0, le=19)
    # OpenMP threads sleep when out of work (OMP_WAIT_POLICY=PASSIVE) instead of spinning
    # on cores that others need; an OMP_WAIT_POLICY in the environment wins.
    train_passive_wait: bool = True
    # Requests allowed inside the pool at once; more wait for a slot.
    max_concurrency: int = Field(16, ge=1)

    # ---- dynamic batching (docs/BENCHMARKS.md says why the defaults are what they are)
    batching: bool = True
    batch_max_size: int = Field(8, ge=1)
    batch_max_delay_ms: float = Field(2.0, ge=0)
    # Batches of one graph run at once while requests queue (service/inference/batching.py);
    # 1: one at a time on every intra-op thread, the latency default (docs/BENCHMARKS.md)
    batch_parallel_runs: int = Field(1, ge=1)

    # ---- hot reload
    reload_poll_s: float = 1.0
    # A version that failed to load is retried after this long (not on every poll).
    reload_retry_s: float = 30.0
    # Non-active versions asked for with ?version= that stay loaded (least recently used).
    extra_versions_cached: int = 2

    # ---- datasets (model_store/archives.py, model_store/intake.py)
    # Upload cap for a dataset archive; far above max_upload_bytes, which is for one image.
    dataset_max_upload_bytes: int = 1024 * 1024 * 1024
    # Caps enforced while extracting, on bytes actually written (headers can lie).
    dataset_max_entries: int = 50_000
    dataset_max_extracted_bytes: int = 4 * 1024 * 1024 * 1024
    # Per zip entry (and per compressed tar stream): extracted bytes / compressed bytes.
    # Images barely compress, so a high ratio on a large entry means a bomb.
    dataset_max_compression_ratio: float = 200.0

    # ---- jobs (job records, queue, worker; jobs/ and worker/runner.py)
    # First start with an empty store: train each task's default model on synthetic data
    # (worker/starter.py). Off for deployments that import real weights.
    starter_models: bool = True
    # Job database and embedded broker live here (not in the store: the store may be shared).
    data_dir: Path = Path("data")
    # None: sqlite:///<data_dir>/toonforge.db. Production: postgresql+psycopg://user@host/db.
    database_url: str | None = None
    # Bounds on every wait for the jobs database (jobs/db_timeouts.py), in the API, the key
    # check and the workers: a server that accepts and never answers becomes an error (the
    # API's 503 database_unavailable; a cached key answer) instead of a hang. PostgreSQL:
    # opening a connection (libpq connect_timeout, whole seconds, at least 2)...
    database_connect_timeout_s: float = Field(3.0, gt=0, le=300)
    # ...one statement, commit or checkout ping (server statement_timeout, and a client-side
    # deadline 0.5 s later that drops the connection of a silent server)...
    database_statement_timeout_s: float = Field(5.0, gt=0, le=3600)
    # ...and the wait for a free pooled connection.
    database_pool_timeout_s: float = Field(5.0, gt=0, le=300)
    # SQLite (the embedded default): how long a writer waits for another's lock.
    database_busy_timeout_s: float = Field(30.0, gt=0, le=3600)
    # None: the embedded filesystem broker under <data_dir>/broker. Production: redis://host:6379/0.
    broker_url: str | None = None
    # The worker's Celery node name (several workers on one host need different ones).
    worker_name: str | None = None
    # A producer gives up after this long so POST /jobs/finetune can answer 503 quickly.
    broker_connect_timeout_s: float = 2.0
    # Redis redelivers an unacknowledged job after this long: keep it above the longest job.
    broker_visibility_timeout_s: int = 48 * 3600
    # Queue the fine-tune task goes to (one queue; one worker process per GPU consumes it).
    job_queue: str = "toonforge"
    # A running job's worker writes its heartbeat this often...
    job_heartbeat_s: float = Field(5.0, gt=0)
    # ...and loses the job when no heartbeat arrived for this long (then it is reclaimed).
    job_lease_s: float = Field(60.0, gt=0)
    # Runs a job may have (first run + redeliveries after a lost worker) before it fails.
    job_max_attempts: int = Field(3, ge=1)
    # Progress rows written at most this often per job (the events table is the SSE source).
    job_progress_interval_s: float = 0.5
    # The cancel flag is re-read from the database at most this often.
    job_cancel_poll_s: float = 0.5
    # GET /jobs/{id}/events: how often the stream reads new events, and the longest silence
    # before it sends a comment line (keeps proxies from closing an idle stream).
    job_events_poll_s: float = 0.5
    job_events_heartbeat_s: float = 15.0
    # Webhook POST timeout and tries (with backoff) on each terminal state.
    webhook_timeout_s: float = 5.0
    webhook_tries: int = 3

    # ---- observability (core/logs.py, service/metrics.py; docs/OPERATIONS.md)
    # One JSON object per line (for log collectors), or "text" for reading in a terminal.
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    # ---- bounded inference work, overload, memory (docs/OPERATIONS.md "Limits")
    # Requests admitted beyond max_concurrency that may wait for a slot; more: 503 overloaded.
    max_queued: int = Field(32, ge=0)
    # Seconds a 503 overloaded answer tells the client to wait (its Retry-After header).
    overload_retry_after_s: int = Field(1, ge=1)
    # Longest image side / shortest side an inference request may send (422 beyond it).
    max_aspect_ratio: float = Field(20.0, ge=1.0)
    # Pixels (width x height) the largest image an answer may hold (output of any route).
    max_output_pixels: int = Field(40_000_000, ge=1)
    # onnxruntime's CPU arena: ~20% less CPU per large batch than malloc (pages stay mapped).
    ort_cpu_mem_arena: bool = True
    # onnxruntime's memory pattern (one block per input shape): on, u2netp b8 took 4.1 GB not 2.5.
    ort_mem_pattern: bool = False
    # Seconds without requests after which arenas shrink and malloc_trim frees heap; 0: never.
    memory_release_idle_s: float = Field(2.0, ge=0)
    # Working memory (decode, graph arena, encode) all running inference requests of this
    # process may reserve at once, by each request's worst-case estimate (service/inference/
    # budget.py); the loaded graphs and queued uploads come on top (docs/OPERATIONS.md).
    memory_budget_mb: int = Field(6144, ge=64)
    # The most one request may reserve: a graph input whose estimate exceeds it is made
    # smaller (cartoonize's long side), so any allowed request fits within the budget.
    memory_request_mb: int = Field(2048, ge=32)
    # Seconds a request waits for its reservation before 503 overloaded (Retry-After).
    memory_wait_s: float = Field(30.0, ge=0)

    # ---- slow clients (service/http11.py, service/timeouts.py)
    # Seconds the request line and headers may take to arrive (from the connection's
    # first byte, or from its opening): then 408 and the connection is closed.
    http_header_timeout_s: float = Field(10.0, gt=0)
    # A body must arrive at an average of http_body_min_rate bytes/s after a grace of
    # http_body_timeout_s seconds: a slower one is cut with 408 and frees its slot.
    http_body_timeout_s: float = Field(10.0, gt=0)
    http_body_min_rate: int = Field(16 * 1024, ge=1)

    # ---- intake caps, webhooks
    # Files one dataset may keep (files the layout uses; ignored entries are not counted).
    dataset_max_files: int = Field(30_000, ge=1)
    # Bytes one upload may write to staging while extracting, counted as disk blocks (a
    # 1-byte file costs 4 KiB); also the cap on a dataset's data/ on disk.
    dataset_max_staging_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1)
    # Entries of the intake report's skipped list kept (and ignored names sampled); counts
    # always cover every file.
    dataset_report_max_items: int = Field(100, ge=1)
    # Webhook hosts allowed although they resolve to loopback/private/link-local addresses
    # (exact host names or IP literals, comma list); empty: only public addresses.
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _comma_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # ---- access: API keys, scopes, per-key limits (docs/SECURITY.md)
    # Scopes anyone may use without a key (comma list: infer, train, admin; empty: none).
    open_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["infer"])
    # HMAC-SHA256 secret for key hashes; unset: one is generated once into the jobs database.
    api_key_secret: str | None = None
    # Seconds a key's verification is cached in each API process (the revocation delay).
    api_key_cache_s: float = Field(5.0, ge=0)
    # Requests per second (token refill rate) per key, or per client IP without a key; 0: off.
    rate_limit_rps: float = Field(50.0, ge=0)
    # Token bucket size: requests a caller may send at once after a quiet spell.
    rate_limit_burst: int = Field(100, ge=1)
    # Redis shared by API replicas for the buckets; None: the broker's when it is redis://,
    # else in-process; "memory": always in-process.
    rate_limit_redis_url: str | None = None
    # Jobs a key may have running (or exporting) when it submits another; 0: no limit.
    key_max_running_jobs: int = Field(4, ge=0)
    # Jobs a key may have waiting in the queue; 0: no limit.
    key_max_queued_jobs: int = Field(50, ge=0)
    # Bytes on disk of all datasets a key uploaded (sum of their data/); 0: no limit.
    key_max_dataset_bytes: int = Field(50 * 1024**3, ge=0)
    # Files kept in all datasets a key uploaded; 0: no limit.
    key_max_dataset_files: int = Field(1_000_000, ge=0)

    @field_validator("open_scopes", mode="before")
    @classmethod
    def _scope_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            unknown = sorted({str(v) for v in value} - {"infer", "train", "admin"})
            if unknown:
                raise ValueError(f"open_scopes: unknown scope(s) {', '.join(unknown)};"
                                 " known: infer, train, admin")
        return value

    # ---- INT8 variants (worker/training/quantize.py, service/inference/sessions.py)
    # Build and gate an INT8 variant of every version at publish (import and fine-tune).
    int8_variants: bool = True
    # Precision a request without ?precision= gets: auto = int8 where the version's variant
    # passed its gate, else fp32; fp32 = always fp32; int8 = as if every request asked int8.
    default_precision: Literal["auto", "fp32", "int8"] = "auto"

    # ---- toonforge pull (worker/pull.py, worker/catalogue.py, docs/CLI.md)
    # Where downloads (and resumable .part files) are kept; None: <data_dir>/downloads.
    pull_cache_dir: Path | None = None
    # A mirror of the whole catalogue: each file is fetched from <base>/<file name> instead
    # of its official URL (None: the official URLs). An http(s) URL.
    pull_base_url: str | None = None
    # Seconds to wait for a connection and for each read of a download.
    pull_timeout_s: float = Field(60.0, gt=0)
    # Tries per file (each resumes where the last stopped) before a cut download fails.
    pull_attempts: int = Field(3, ge=1)

    # ---- reload across replicas (model_store/notify.py, service/inference/reload.py)
    # Redis whose pub/sub announces activations to every API replica; None: the broker's
    # when it is redis://, else none (poll only); "off": never (poll only).
    reload_redis_url: str | None = None
    # The pub/sub channel of those announcements (deployments sharing one Redis: one each).
    reload_redis_channel: str = "toonforge:activations"
    # This process's name in /readyz and in the announcements it sends; None: hostname:pid.
    replica_id: str | None = None

    # ---- sweeps (jobs/sweeps.py, docs/JOBS.md "Sweeps")
    # The most points (jobs) one POST /sweeps may create; a larger grid or list is a 422.
    sweep_max_points: int = Field(16, ge=1, le=1000)

    # ---- multi-device training (worker/training/distributed.py, docs/JOBS.md)
    # Most CPU training processes one job may ask for (devices) on a CPU worker; None: the
    # worker's core count. CUDA workers allow torch.cuda.device_count() instead.
    max_train_processes: int | None = Field(None, ge=1)

    # ---- object store (model_store/objects.py, model_store/factory.py)
    # None: models and datasets live in store_dir (a local or shared directory).
    # s3://bucket/prefix: they live in an S3-compatible object store, and store_dir is only
    # this process's own working directory and cache (never shared between hosts).
    store_url: str | None = None
    # The S3 endpoint (MinIO, Ceph RGW, a test server); None: AWS's for s3_region.
    # Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    # an instance profile...), never from these settings.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Bytes of downloaded blobs (graphs, weights, datasets) this process keeps in its
    # content-addressed cache under store_dir; least recently used first out.
    store_cache_max_bytes: int = Field(4 * 1024 * 1024 * 1024, ge=0)

    # ---- the face stage (faces/; docs/FACES.md): detection bounds for every family using it
    # Detection runs on a copy whose longer side is at most this (the detector's own limit
    # is 960); its cost grows with the pixels, and it holds the GIL while it runs.
    face_detect_max_side: int = Field(640, ge=32, le=960)
    # Faces processed per image, biggest first; more are counted but left as they are.
    face_max_per_image: int = Field(8, ge=0)
    # Detector confidence (0..1) below which a candidate is not a face.
    face_min_score: float = Field(0.5, ge=0.0, le=1.0)
    # Threads of one detection: the detector's OpenMP team (set per call, so other OpenMP
    # users are unaffected) and the landmark model's onnxruntime session.
    face_detect_threads: int = Field(1, ge=1)

    # ---- experiment tracking (worker/training/tracking.py)
    # An MLflow tracking server (http(s)://host:port) every fine-tune job logs a run to;
    # None: no MLflow. Tracking never fails a job (docs/JOBS.md "Tracking").
    mlflow_tracking_uri: str | None = None
    # The MLflow experiment the runs go into (created when missing).
    mlflow_experiment: str = "toonforge"
    # The browser-facing base URL of the MLflow UI for the job's link; None: the tracking URI.
    mlflow_ui_url: str | None = None
    # TensorBoard event files go to <dir>/<job_id>/; None: none are written.
    tensorboard_dir: Path | None = None

    @field_validator("task_plugins", "worker_plugins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # A lease shorter than two heartbeats would reclaim jobs whose worker is alive.
        if self.job_lease_s < 2 * self.job_heartbeat_s:
            raise ValueError(f"job_lease_s ({self.job_lease_s}) must be at least twice"
                             f" job_heartbeat_s ({self.job_heartbeat_s})")
        if self.max_side_limit < 16:
            raise ValueError("max_side_limit must be at least 16")
        return self

    def train_thread_count(self) -> int:
        """The worker's torch intra-op threads when ``train_threads`` is unset: what the
        API's graph runs leave of this process's cores (at least one)."""
        if self.train_threads is not None:
            return self.train_threads
        return max(1, usable_cores() - self.ort_intra_op_threads)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def jobs_database_url(self) -> str:
        """The job database: ``database_url``, else a SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.data_dir) / 'toonforge.db').resolve()}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def jobs_broker_url(self) -> str:
        """The broker: ``broker_url``, else the embedded transport under ``data_dir``."""
        return self.broker_url or f"{EMBEDDED_BROKER_SCHEME}://localhost/"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, lowered by a cgroup v2 CPU quota
    (a container started with ``--cpus``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


@lru_cache
def get_settings() -> Settings:
    return Settings()
