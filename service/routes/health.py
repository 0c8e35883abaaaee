"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.wire import Health, ModelReadiness, Readiness
from service.deps import PoolDep
from service.errors import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", responses=error_responses(500))
async def healthz() -> Health:
    """The process is alive (checks nothing else)."""
    return Health()


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not every active version is loaded."},
               **error_responses(500)},
)
async def readyz(pool: PoolDep) -> JSONResponse:
    """Ready when every model's active version is loaded and warmed; per-model detail."""
    models = [
        ModelReadiness(name=s.name, task=s.task, active_version=s.active_version,
                       loaded_version=s.loaded_version, providers=s.providers, ready=s.ready,
                       error=s.error)
        for s in await pool.states()
    ]
    body = Readiness(ready=all(m.ready for m in models), models=models)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)
