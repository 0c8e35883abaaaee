"""matte's endpoint (API process only): ``POST /matte``, mask, cut-out or composite."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import Field

from core.errors import InvalidParameter
from core.wire import ModelChoice
from families.matte.processing import composite, cutout, matte_input, matte_mask, parse_colour
from families.matte.spec import SPEC, MatteServing
from service.deps import PoolDep
from service.imaging import MEDIA_TYPES, encode_image
from service.inference.batching import Feeds
from service.inference.budget import request_memory
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


class MatteParams(ModelChoice):
    output: Literal["mask", "cutout", "composite"] = "mask"
    background: str = Field(
        "#ffffff", pattern=r"^#[0-9a-fA-F]{6}$", description="Composite colour, #rrggbb."
    )
    format: Literal["png", "webp", "jpeg"] = Field(
        "png", description="jpeg only for mask and composite (it has no alpha)."
    )


async def matte_image(pool: InferencePool, data: bytes, params: MatteParams) -> Served:
    if params.format == "jpeg" and params.output == "cutout":
        raise InvalidParameter("format", "jpeg has no alpha channel: use png or webp for cutout")
    colour = parse_colour(params.background)
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, MatteServing)
    graph = version.graph("main")

    def prepare() -> tuple[Image.Image, Feeds]:
        image = decode_upload(pool, data)
        return image, {graph.inputs[0]: matte_input(image, config)}

    def finish(image: Image.Image, out: Feeds) -> bytes:
        mask = matte_mask(out[graph.outputs[0]], image.size)
        if params.output == "cutout":
            result = cutout(image, mask)
        elif params.output == "composite":
            result = composite(image, mask, colour)
        else:
            result = mask
        return encode_image(result, params.format)

    body = await staged(pool, version, "main", prepare, finish,
                        request_memory(version, "main", data=data))
    return Served(version, body, MEDIA_TYPES[params.format])


router = family_router()


@router.post("/matte", operation_id="matte", response_class=Response,
             responses={**image_ok("image/png", "image/webp", "image/jpeg"), **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def matte(request: Request, pool: PoolDep, params: Annotated[MatteParams, Query()]
                ) -> Response:
    """Separate the foreground: alpha mask, RGBA cut-out or composite on a colour."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await matte_image(pool, data, params))


EXAMPLES = OperationExamples(curl={
    "matte": f"curl --data-binary @photo.jpg -H 'content-type: image/jpeg'"
             f" '{URL}/matte?output=cutout' -o cutout.png",
})
