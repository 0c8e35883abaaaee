"""The FastAPI application: ``create_app(settings)``, and ``app`` for uvicorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model_store.datasets import DatasetStore
from model_store.store import ModelStore
from service.config import Settings, get_settings
from service.errors import install_error_handlers
from service.imaging import MULTIPART_OVERHEAD
from service.inference.pool import InferencePool
from service.inference.reload import ReloadWatcher
from service.limits import BodyLimitMiddleware
from service.routes import datasets, health, inference, models

log = logging.getLogger(__name__)


def _configure_logging() -> None:
    # Under a bare `uvicorn service.app:app` nothing else would show our INFO lines
    # (loads, swaps, releases), which are how an operator follows a reload.
    service_log = logging.getLogger("service")
    if not service_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        service_log.addHandler(handler)
    service_log.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_logging()
        pool = InferencePool(ModelStore(settings.store_dir), settings)
        # Leftovers of uploads a crashed process never finished (none in normal operation).
        await asyncio.to_thread(DatasetStore(settings.store_dir).sweep_staging)
        app.state.pool = pool
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
    app.include_router(health.router)
    return app


app = create_app()
