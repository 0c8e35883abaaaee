"""The models API: list, inspect, activate (promote or roll back)."""

from __future__ import annotations

from fastapi import APIRouter, Path

from core.wire import ActivateRequest, ActivateResponse, Manifest, ModelDetail, ModelInfo
from service import model_listing
from service.auth import auth_responses, scope
from service.deps import PoolDep
from service.errors import error_responses
from service.views import manifest_view

router = APIRouter(prefix="/models", tags=["models"], responses=auth_responses())


@router.get("", operation_id="list_models", responses=error_responses(500),
            dependencies=[scope("infer")])
async def list_models(pool: PoolDep) -> list[ModelInfo]:
    """Every model: task, versions, active version, whether it is its task's default."""
    return await pool.read_store(model_listing.list_models, pool.store, pool.settings)


@router.get("/{name}", operation_id="get_model", responses=error_responses(404, 422, 500),
            dependencies=[scope("infer")])
async def get_model(pool: PoolDep, name: str) -> ModelDetail:
    """One model with a summary of each version."""
    loaded = pool.loaded(name)
    loaded_version = loaded.manifest.version if loaded else None
    return await pool.read_store(
        model_listing.model_detail, pool.store, pool.settings, name, loaded_version
    )


@router.get(
    "/{name}/versions/{version}",
    operation_id="get_model_version",
    dependencies=[scope("infer")],
    responses=error_responses(404, 422, 500),
)
async def get_model_version(
    pool: PoolDep, name: str, version: int = Path(ge=1)
) -> Manifest:
    """The manifest of one version."""
    return manifest_view(await pool.read_store(pool.store.manifest, name, version))


@router.post(
    "/{name}/activate",
    operation_id="activate_model_version",
    dependencies=[scope("admin")],
    responses=error_responses(404, 409, 413, 422, 500),
)
async def activate_model_version(
    pool: PoolDep, name: str, request: ActivateRequest
) -> ActivateResponse:
    """Make a version active (promote or roll back); this process serves it before answering."""
    previous = await pool.activate(name, request.version)
    return ActivateResponse(name=name, active=request.version, previous=previous)


@router.post(
    "/{name}/rollback",
    operation_id="rollback_model",
    dependencies=[scope("admin")],
    responses=error_responses(404, 409, 500),
)
async def rollback_model(pool: PoolDep, name: str) -> ActivateResponse:
    """Step back through the activation history: re-activate the version that was active
    before the current one became active (409 if none). Rolling back again goes one more
    step back (v1 -> v2 -> v3, rollback: v2, rollback: v1), it does not toggle."""
    target = await pool.read_store(pool.store.rollback_target, name)
    previous = await pool.activate(name, target, rollback=True)
    return ActivateResponse(name=name, active=target, previous=previous)
