"""Inference routes: parse the request, call one pipeline, answer with X-Model-Version."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError

from core.errors import InvalidParameter
from core.wire import (
    AutoencodeParams,
    CartoonizeParams,
    ClassifyParams,
    ClassifyResponse,
    GenerateBody,
    GenerateOptions,
    ImagesResponse,
    InterpolateParams,
    MatteParams,
    ModelChoice,
    SampleParams,
)
from service.auth import auth_responses, scope
from service.deps import PoolDep
from service.errors import NoImagePipeline, error_responses
from service.imaging import EXTRA_FILES, MAX_FORM_FIELDS, read_uploads
from service.inference import pipelines

router = APIRouter(tags=["inference"], dependencies=[scope("infer")],
                   responses=auth_responses())
P = TypeVar("P", bound=BaseModel)

_BINARY = {"type": "string", "format": "binary"}


def _upload_body(*fields: str) -> dict[str, Any]:
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


def _image_ok(*media_types: str, headers: dict[str, str] | None = None) -> dict[int | str, Any]:
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


_UPLOAD_ERRORS = _with_retry_after(
    error_responses(400, 404, 408, 409, 413, 415, 422, 500, 503, descriptions=_503))
# No upload, but a JSON body (generate) is still bounded by the body-limit middleware.
_NO_UPLOAD_ERRORS = _with_retry_after(
    error_responses(404, 409, 413, 422, 500, 503, descriptions=_503))


def _respond(served: pipelines.Served) -> Response:
    headers = pipelines.describe(served)
    if isinstance(served.content, BaseModel):
        return Response(served.content.model_dump_json(), media_type="application/json",
                        headers=headers)
    return Response(served.content, media_type=served.media_type, headers=headers)


def _merge(params: P, fields: dict[str, Any]) -> P:
    """Add form fields (or body fields) to parameters already read from the query."""
    if not fields:
        return params
    try:
        return type(params).model_validate({**params.model_dump(exclude_unset=True), **fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameter(name, first["msg"]) from exc


async def _one_image(request: Request, pool: PoolDep) -> bytes:
    async with pool.reading():  # counted in /metrics while the upload arrives
        images, _ = await read_uploads(request, ("image",), pool.settings.max_upload_bytes)
    return images["image"]


@router.post("/cartoonize", operation_id="cartoonize", response_class=Response,
             responses={**_image_ok("image/png", "image/jpeg", "image/webp"), **_UPLOAD_ERRORS},
             openapi_extra=_upload_body("image"))
async def cartoonize(
    request: Request, pool: PoolDep, params: Annotated[CartoonizeParams, Query()]
) -> Response:
    """Turn a photo into a cartoon of the same size."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await _one_image(request, pool)
        return _respond(await pipelines.cartoonize(pool, data, params))


@router.post("/matte", operation_id="matte", response_class=Response,
             responses={**_image_ok("image/png", "image/webp", "image/jpeg"), **_UPLOAD_ERRORS},
             openapi_extra=_upload_body("image"))
async def matte(request: Request, pool: PoolDep, params: Annotated[MatteParams, Query()]
                ) -> Response:
    """Separate the foreground: alpha mask, RGBA cut-out or composite on a colour."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await _one_image(request, pool)
        return _respond(await pipelines.matte(pool, data, params))


@router.post("/classify", operation_id="classify", response_class=Response,
             responses={200: {"model": ClassifyResponse, "description": "Top-k labels."},
                        **_UPLOAD_ERRORS},
             openapi_extra=_upload_body("image"))
async def classify(
    request: Request, pool: PoolDep, params: Annotated[ClassifyParams, Query()]
) -> Response:
    """The most probable labels of an image, with softmax scores."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await _one_image(request, pool)
        return _respond(await pipelines.classify(pool, data, params))


class GenerateQuery(ModelChoice, GenerateOptions):
    pass


@router.post("/generate", operation_id="generate", response_class=Response,
             responses={200: {**_image_ok("image/png", headers={"X-Seed": "The seed used"})[200],
                              "model": ImagesResponse},
                        **_NO_UPLOAD_ERRORS})
async def generate(
    pool: PoolDep,
    query: Annotated[GenerateQuery, Query()],
    body: Annotated[GenerateBody | None, Body()] = None,
) -> Response:
    """Generate images from a seed or explicit latents: a PNG grid or JSON (format=json)."""
    options = GenerateBody.model_validate(
        query.model_dump(exclude_unset=True, exclude={"model", "version", "precision"})
    )
    if body is not None:
        options = _merge(options, body.model_dump(exclude_unset=True))
    return _respond(await pipelines.generate(pool, options, query.model, query.version,
                                             query.precision))


@router.post("/autoencode", operation_id="autoencode", response_class=Response,
             responses={**_image_ok("image/png"), **_UPLOAD_ERRORS},
             openapi_extra=_upload_body("image"))
async def autoencode(
    request: Request, pool: PoolDep, params: Annotated[AutoencodeParams, Query()]
) -> Response:
    """Reconstruct an image through the autoencoder (64x64 unless size asks for more)."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await _one_image(request, pool)
        return _respond(await pipelines.autoencode(pool, data, params))


@router.post("/autoencode/interpolate", operation_id="autoencode_interpolate",
             response_class=Response,
             responses={200: {**_image_ok("image/png")[200], "model": ImagesResponse},
                        **_UPLOAD_ERRORS},
             openapi_extra=_upload_body("image_a", "image_b"))
async def autoencode_interpolate(
    request: Request, pool: PoolDep, params: Annotated[InterpolateParams, Query()]
) -> Response:
    """Decode a straight path between the latents of image_a and image_b (a PNG strip)."""
    async with pool.admit():  # before the body is read: a full pool reads none
        async with pool.reading():
            images, texts = await read_uploads(
                request, ("image_a", "image_b"), pool.settings.max_upload_bytes
            )
        params = _merge(params, {k: v for k, v in texts.items() if k in ("steps", "format")})
        return _respond(
            await pipelines.interpolate(pool, images["image_a"], images["image_b"], params)
        )


@router.post("/autoencode/sample", operation_id="autoencode_sample", response_class=Response,
             responses={**_image_ok("image/png", headers={
                 "X-Seed": "The seed used",
                 "X-Latent-Distribution": "fitted (the version's latent_stats) or prior (N(0, I))",
             }), **_NO_UPLOAD_ERRORS})
async def autoencode_sample(pool: PoolDep, params: Annotated[SampleParams, Query()]) -> Response:
    """Decode latents sampled from the fitted latent distribution into a PNG grid."""
    return _respond(await pipelines.sample(pool, params))


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
             responses={**_image_ok("image/png"), **_INFER_ERRORS},
             openapi_extra=_upload_body("image"))
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
        data = await _one_image(request, pool)
        return _respond(await pipelines.infer_image(pool, spec, data, params))
