"""The FastAPI application: ``create_app(settings)``, and ``app`` for uvicorn."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from core.plugins import TASK_ENTRY_POINTS, import_modules
from core.settings import Settings, get_settings
from jobs.artifacts import open_artifacts
from jobs.db import Database
from jobs.queue import JobQueue
from jobs.repository import JobRepository
from jobs.request_checks import Stores
from jobs.sweeps import SweepRepository
from model_store.factory import open_dataset_store, open_model_store, store_location
from model_store.notify import notifier_from_settings
from service.auth import Access, install_access
from service.errors import install_error_handlers
from service.imaging import MULTIPART_OVERHEAD
from service.inference.pool import InferencePool
from service.inference.reload import ReloadWatcher
from service.limits import BodyLimitMiddleware
from service.observability import install_observability
from service.openapi_docs import install_openapi
from service.paths import NulPathGuard
from service.routes import datasets, health, inference, jobs, keys, models, sweeps
from service.routes.api_docs import install_api_docs
from service.routes.web import install_web
from service.timeouts import BodyTimeoutMiddleware
from service.unserved import install_unserved
from tasks import task_specs

log = logging.getLogger(__name__)


SCHEMA_RETRY_S = 5.0


async def _create_schema(jobs_db: Database, first_try: asyncio.Event) -> None:
    """Create the jobs schema, retrying while the database does not answer."""
    try:
        while True:
            try:
                await asyncio.to_thread(jobs_db.create_schema)
                return
            except DBAPIError as exc:
                log.error("the jobs database does not answer (%s); job routes answer 503"
                          " and the schema is retried in %.0f s", type(exc).__name__,
                          SCHEMA_RETRY_S)
                first_try.set()
                await asyncio.sleep(SCHEMA_RETRY_S)
    finally:
        first_try.set()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Extra model families register their task specs before anything reads the registry
    # (routes, the OpenAPI document, the pool); a missing plugin stops the start.
    plugins = import_modules(settings.task_plugins, TASK_ENTRY_POINTS)
    if plugins:
        log.info("task plugins imported: %s", ", ".join(plugins))
    # A family with named endpoints names its API module in its spec (built-in or plugin).
    family_apis = [importlib.import_module(spec.api) for spec in task_specs() if spec.api]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The store backend (a directory, or S3 with store_dir as this process's cache) is
        # chosen once, here; every route gets these objects (service/deps.py).
        # Activations through this process are announced to the other replicas.
        models = open_model_store(settings, notifier=notifier_from_settings(settings))
        datasets = open_dataset_store(settings)
        log.info("model and dataset store: %s", store_location(settings))
        pool = InferencePool(models, settings)
        # Leftovers of uploads a crashed process never finished (none in normal operation).
        await asyncio.to_thread(datasets.sweep_staging)
        app.state.pool = pool
        app.state.stores = Stores(models, datasets)
        app.state.artifacts = open_artifacts(settings)  # job samples and checkpoints
        # One job database and one broker producer per process (docs/JOBS.md).
        jobs_db = Database.from_settings(settings)
        # A database that is down at start does not stop inference: the open scopes serve,
        # job routes answer 503 database_unavailable, and the schema is created once the
        # database answers (docs/OPERATIONS.md, "What needs what").
        first_try = asyncio.Event()
        schema = asyncio.create_task(_create_schema(jobs_db, first_try))
        await first_try.wait()  # normally done in ms; on failure the task keeps retrying
        failure = schema.exception() if schema.done() else None
        if failure is not None:
            raise failure  # not an outage: e.g. a database URL it cannot use
        app.state.job_repository = JobRepository(jobs_db.sessions)
        app.state.sweep_repository = SweepRepository(jobs_db.sessions)  # table beside jobs'
        # API keys and rate limits (service/auth.py); logs which scopes are open.
        app.state.access = access = await asyncio.to_thread(Access.start, settings,
                                                            jobs_db.sessions)
        app.state.job_queue = job_queue = JobQueue(settings)
        try:
            await pool.sync_all()  # a model that fails to load is reported by /readyz
        except Exception:
            log.exception("initial load of the model store failed; the watcher retries")
        # The poll, plus Redis activation announcements when configured (/readyz: reload).
        app.state.reload_watcher = watcher = ReloadWatcher.from_settings(pool, settings)
        watcher.start()
        try:
            yield
        finally:
            schema.cancel()
            await watcher.stop()
            pool.close()
            job_queue.close()
            await access.close()
            jobs_db.dispose()

    app = FastAPI(
        title="toonforge",
        summary="Inference for anime and cartoon image models",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: ours are served offline below
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_unserved(app)  # no_active_version: what is on the way, what to run
    install_access(app)  # 401/403/429 with their headers
    # The largest legitimate body: two images for /autoencode/interpolate, plus framing.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=2 * settings.max_upload_bytes + MULTIPART_OVERHEAD,
        path_limits={"/datasets": settings.dataset_max_upload_bytes + MULTIPART_OVERHEAD},
    )
    # Inside the body cap: a slow body is cut at its deadline, before the cap is reached.
    app.add_middleware(BodyTimeoutMiddleware, grace_s=settings.http_body_timeout_s,
                       min_rate=settings.http_body_min_rate)
    app.add_middleware(NulPathGuard)  # before routing: ids reach the database
    for api in family_apis:  # registration order: the order of the document's paths
        app.include_router(api.router)
    app.include_router(inference.router)  # POST /infer/{task}
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(keys.router)  # API keys (admin scope)
    app.include_router(sweeps.router)  # hyper-parameter sweeps (train scope)
    app.include_router(health.router)
    install_web(app)  # the web page: / and /static/* (not in the OpenAPI schema)
    install_api_docs(app)  # /docs, /redoc and their assets, no network needed
    # Last: its middleware wraps all others (JSON logs, X-Request-ID, /metrics).
    install_observability(app, settings)
    # curl and JSON examples for every operation
    install_openapi(app, [api.EXAMPLES for api in family_apis if hasattr(api, "EXAMPLES")])
    return app


app = create_app()
