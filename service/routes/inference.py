"""Inference routes: the generic ``POST /infer/{task}``, and the pieces every family's named
endpoints are built from (``family_router``, upload bodies, documented answers and errors,
``respond``): parse the request, call one pipeline, answer with X-Model-Version."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError

from core.errors import InvalidParameter
from core.wire import ModelChoice
from service.auth import auth_responses, scope
from service.deps import PoolDep
from service.errors import NoImagePipeline, error_responses
from service.imaging import EXTRA_FILES, MAX_FORM_FIELDS, read_uploads
from service.inference import pipelines


def family_router() -> APIRouter:
    """A router for a family's named endpoints: tagged, scoped and documented like these."""
    return APIRouter(tags=["inference"], dependencies=[scope("infer")],
                     responses=auth_responses())


router = family_router()
P = TypeVar("P", bound=BaseModel)

_BINARY = {"type": "string", "format": "binary"}


def upload_body(*fields: str) -> dict[str, Any]:
    """OpenAPI text for bodies we read ourselves (to bound them while reading)."""
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {
            "type": "object",
            "properties": {name: _BINARY for name in fields},
            "required": list(fields),
            "maxProperties": len(fields) + EXTRA_FILES + MAX_FORM_FIELDS,
            "description": f"at most {len(fields) + EXTRA_FILES} files and {MAX_FORM_FIELDS}"
                           " other fields (more: 413 too_many_parts)",
        }},
    }
    if len(fields) == 1:
        content["image/*"] = {"schema": _BINARY}
    return {"requestBody": {"required": True, "content": content}}


def image_ok(*media_types: str, headers: dict[str, str] | None = None) -> dict[int | str, Any]:
    ok: dict[str, Any] = {
        "description": "The image; X-Model-Version names the version that made it.",
        "content": {media: {"schema": _BINARY} for media in media_types},
        "headers": {"X-Model-Version": {"schema": {"type": "string"}, "description": "model@n"},
                    "X-Model-Precision": {"schema": {"type": "string", "enum": ["fp32", "int8"]},
                                          "description": "The precision of the graphs that ran"},
                    **{k: {"schema": {"type": "string"}, "description": v}
                       for k, v in (headers or {}).items()}},
    }
    return {200: ok}


# Every inference route can be refused when the pool is full (pool.admit): 503 overloaded.
_503 = {503: "No servable version (`no_active_version`, `model_not_ready`), or the server is"
        " at capacity (`overloaded`: all slots, or the memory budget for longer than"
        " TOONFORGE_MEMORY_WAIT_S; retry after the `Retry-After` seconds)."}


def _with_retry_after(responses: dict[int | str, Any]) -> dict[int | str, Any]:
    """Document the Retry-After header an ``overloaded`` 503 carries."""
    responses[503]["headers"] = {"Retry-After": {
        "schema": {"type": "integer"},
        "description": "With `overloaded`: seconds to wait before retrying."}}
    return responses


UPLOAD_ERRORS = _with_retry_after(
    error_responses(400, 404, 408, 409, 413, 415, 422, 500, 503, descriptions=_503))
# No upload, but a JSON body (generate) is still bounded by the body-limit middleware.
NO_UPLOAD_ERRORS = _with_retry_after(
    error_responses(404, 409, 413, 422, 500, 503, descriptions=_503))


def respond(served: pipelines.Served) -> Response:
    headers = pipelines.answer_headers(served)
    if isinstance(served.content, BaseModel):
        return Response(served.content.model_dump_json(), media_type="application/json",
                        headers=headers)
    return Response(served.content, media_type=served.media_type, headers=headers)


def merge(params: P, fields: dict[str, Any]) -> P:
    """Add form fields (or body fields) to parameters already read from the query."""
    if not fields:
        return params
    try:
        return type(params).model_validate({**params.model_dump(exclude_unset=True), **fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameter(name, first["msg"]) from exc


async def one_image(request: Request, pool: PoolDep) -> bytes:
    async with pool.reading():  # counted in /metrics while the upload arrives
        images, _ = await read_uploads(request, ("image",), pool.settings.max_upload_bytes)
    return images["image"]


_INFER_ERRORS = _with_retry_after(error_responses(
    400, 404, 409, 413, 415, 422, 500, 503, descriptions={**_503,
    404: "No task of that name is registered (`task_not_found`), or an unknown model or"
    " version (`model_not_found`, `version_not_found`).",
    422: "The task has no image pipeline, the model serves another task or a parameter is"
    " invalid (`invalid_parameter`), or the image has too many pixels (`too_many_pixels`).",
}))


def task_endpoints(app: Any, task: str) -> list[str]:
    """The POST routes a task serves on its own: ``/{task}`` and ``/{task}/...`` by the
    convention every task with named routes follows (read from the app, so a plugin's
    routes count too)."""
    found = []
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path or ""
        if isinstance(route, APIRoute) and "POST" in (route.methods or ()) and (
                path == f"/{task}" or path.startswith(f"/{task}/")):
            found.append(f"POST {path}")
    return sorted(found, key=len)


@router.post("/infer/{task}", operation_id="infer", response_class=Response,
             responses={**image_ok("image/png"), **_INFER_ERRORS},
             openapi_extra=upload_body("image"))
async def infer(
    request: Request,
    pool: PoolDep,
    params: Annotated[ModelChoice, Query()],
    task: str = Path(description="A registered task whose spec declares an image pipeline."),
) -> Response:
    """Run any task that declares an image pipeline: an image in, a PNG out.

    This is how a model family registered by a plugin (TOONFORGE_TASK_PLUGINS, or the
    `toonforge.tasks` entry point) is served with no route of its own: its task spec's
    `image_pipeline` turns the decoded RGB image into the main graph's inputs and the graph's
    outputs into an image. The same upload rules and limits as every image route apply;
    `model` and `version` choose what serves it (the task's default model and its active
    version when absent), and X-Model-Version names the version that did.
    """
    try:
        spec = pipelines.image_task(task)  # 404 / 422 before the body is read
    except NoImagePipeline:
        raise NoImagePipeline(task, task_endpoints(request.app, task)) from None
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await pipelines.infer_image(pool, spec, data, params))
