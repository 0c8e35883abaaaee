"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core.wire import Health, ModelReadiness, Readiness, ReloadStatus
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
    responses={503: {"model": Readiness,
                     "description": "A model with an active version serves nothing."},
               **error_responses(500)},
)
async def readyz(pool: PoolDep, request: Request) -> JSONResponse:
    """Ready (200) while every model serves a version; per-model detail.

    A model whose active version cannot load but that still serves an earlier good one
    (kept from before, or at start the newest loadable version of its activation history)
    is ready with ``fallback: true`` and the load error: traffic is still answered, so a
    load balancer should keep the replica. 503 only when a model serves nothing at all.
    ``replica`` names the process that answered and ``reload`` how activations reach it
    (Redis announcements and whether they are connected now, or the poll alone).
    """
    watcher = request.app.state.reload_watcher
    models = [
        ModelReadiness(name=s.name, task=s.task, active_version=s.active_version,
                       loaded_version=s.loaded_version, providers=s.providers, ready=s.ready,
                       fallback=s.fallback, error=s.error)
        for s in await pool.states()
    ]
    body = Readiness(ready=all(m.ready for m in models), models=models,
                     replica=watcher.replica,
                     reload=ReloadStatus(mode=watcher.mode, connected=watcher.connected))
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)
