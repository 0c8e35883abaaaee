"""The FastAPI application: ``create_app(settings)``, and ``app`` for uvicorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.plugins import TASK_ENTRY_POINTS, import_modules
from core.settings import Settings, get_settings
from jobs.db import Database
from jobs.queue import JobQueue
from jobs.repository import JobRepository
from model_store.datasets import DatasetStore
from model_store.store import ModelStore
from service.errors import install_error_handlers
from service.imaging import MULTIPART_OVERHEAD
from service.inference.pool import InferencePool
from service.inference.reload import ReloadWatcher
from service.limits import BodyLimitMiddleware
from service.observability import install_observability
from service.openapi_docs import install_openapi
from service.routes import datasets, health, inference, jobs, models
from service.routes.web import install_web

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Extra model families register their task specs before anything reads the registry
    # (routes, the OpenAPI document, the pool); a missing plugin stops the start.
    plugins = import_modules(settings.task_plugins, TASK_ENTRY_POINTS)
    if plugins:
        log.info("task plugins imported: %s", ", ".join(plugins))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = InferencePool(ModelStore(settings.store_dir), settings)
        # Leftovers of uploads a crashed process never finished (none in normal operation).
        await asyncio.to_thread(DatasetStore(settings.store_dir).sweep_staging)
        app.state.pool = pool
        # One job database and one broker producer per process (docs/JOBS.md).
        jobs_db = Database.from_settings(settings)
        await asyncio.to_thread(jobs_db.create_schema)
        app.state.job_repository = JobRepository(jobs_db.sessions)
        app.state.job_queue = job_queue = JobQueue(settings)
        try:
            await pool.sync_all()  # a model that fails to load is reported by /readyz
        except Exception:
            log.exception("initial load of the model store failed; the watcher retries")
        watcher = ReloadWatcher(pool, settings.reload_poll_s)
        watcher.start()
        try:
            yield
        finally:
            await watcher.stop()
            pool.close()
            job_queue.close()
            jobs_db.dispose()

    app = FastAPI(
        title="toonforge",
        summary="Inference for anime and cartoon image models",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # The largest legitimate body: two images for /autoencode/interpolate, plus framing.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=2 * settings.max_upload_bytes + MULTIPART_OVERHEAD,
        path_limits={"/datasets": settings.dataset_max_upload_bytes + MULTIPART_OVERHEAD},
    )
    app.include_router(inference.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    install_web(app)  # the web page: / and /static/* (not in the OpenAPI schema)
    # Last: its middleware wraps all others (JSON logs, X-Request-ID, /metrics).
    install_observability(app, settings)
    install_openapi(app)  # curl and JSON examples for every operation
    return app


app = create_app()
