"""cartoonize's endpoint (API process only): ``POST /cartoonize``, photo in, cartoon out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import Field

from core.wire import ModelChoice
from families.cartoonize.processing import cartoon_graph_size, cartoon_input, cartoon_output
from families.cartoonize.spec import SPEC, CartoonizeServing
from service.deps import PoolDep
from service.imaging import MEDIA_TYPES, declared_size, encode_image
from service.inference.batching import Feeds
from service.inference.budget import RequestMemory, largest_fitting, request_memory
from service.inference.pipelines import Served, config_of, decode_upload, staged
from service.inference.pool import InferencePool
from service.openapi_docs import URL, OperationExamples
from service.routes.inference import (
    UPLOAD_ERRORS,
    family_router,
    image_ok,
    one_image,
    respond,
    upload_body,
)


class CartoonizeParams(ModelChoice):
    max_side: int | None = Field(
        None, ge=16, description="Long side the graph sees (default from the manifest, capped"
        " by the server's max_side_limit)."
    )
    format: Literal["png", "jpeg", "webp"] = "png"


async def cartoonize_image(pool: InferencePool, data: bytes, params: CartoonizeParams
                           ) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, CartoonizeServing)
    max_side = min(params.max_side or config.max_side, pool.settings.max_side_limit)
    graph = version.graph("main")
    width, height = declared_size(data)

    def memory(side: int) -> RequestMemory:
        graph_w, graph_h = cartoon_graph_size((width, height), side, config.multiple_of)
        return request_memory(version, "main", data=data, graph_values=3 * graph_w * graph_h)

    # The graph's input is capped, never tiled: a max_side whose arena would not fit one
    # request's share of the memory budget is lowered until it does, down to the version's
    # own max_side (so answers at the defaults are unchanged).
    if width and height:
        max_side = largest_fitting(pool.budget.per_request, lambda side: memory(side).total,
                                   min(max_side, config.max_side), max_side)

    def prepare() -> tuple[Image.Image, Feeds]:
        image = decode_upload(pool, data)
        return image, {graph.inputs[0]: cartoon_input(image, config, max_side)}

    def finish(image: Image.Image, out: Feeds) -> bytes:
        cartoon = cartoon_output(out[graph.outputs[0]], image.size, config)
        return encode_image(cartoon, params.format)

    body = await staged(pool, version, "main", prepare, finish, memory(max_side))
    return Served(version, body, MEDIA_TYPES[params.format])


router = family_router()


@router.post("/cartoonize", operation_id="cartoonize", response_class=Response,
             responses={**image_ok("image/png", "image/jpeg", "image/webp"), **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def cartoonize(
    request: Request, pool: PoolDep, params: Annotated[CartoonizeParams, Query()]
) -> Response:
    """Turn a photo into a cartoon of the same size."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await cartoonize_image(pool, data, params))


EXAMPLES = OperationExamples(curl={
    "cartoonize": f"curl -F image=@photo.jpg '{URL}/cartoonize?format=png' -o cartoon.png",
})
