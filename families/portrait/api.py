"""portrait's endpoint (API process only): ``POST /portrait``, a line drawing of the face.

The face stage finds the biggest face and cuts the authors' demo crop around it (no face,
or ``crop=none``: the whole image); the answer says which in its headers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import Field

from core.wire import ModelChoice
from faces import DetectLimits
from families.portrait.processing import (
    MAX_SIGMA,
    Region,
    choose_region,
    composite,
    drawing_image,
    drawing_values,
    paste,
    portrait_input,
    region_pixels,
)
from families.portrait.spec import SPEC, PortraitServing
from service.deps import PoolDep
from service.imaging import declared_size, encode_image
from service.inference.batching import Feeds
from service.inference.budget import ANSWER_BYTES_PER_PIXEL, request_memory
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

HEADERS = {
    "X-Portrait-Crop": "face (the demo's crop around the biggest face) or image (the whole"
                       " image: no face found, or crop=none)",
    "X-Face-Found": "true or false; absent with crop=none (no face was looked for)",
    "X-Crop-Box": "left,top,right,bottom of the drawn region in image pixels (it may reach"
                  " outside the image, where the demo pads with white)",
}


class PortraitParams(ModelChoice):
    output: Literal["drawing", "composite", "full"] = Field(
        "drawing", description="drawing: the region's drawing (greyscale); composite: blended"
        " with the blurred region; full: the whole image with the region replaced by the"
        " composite (alpha=0: by the drawing).")
    crop: Literal["face", "none"] = Field(
        "face", description="face: the demo's crop around the biggest face; none: the whole"
        " image.")
    sigma: float = Field(2.0, ge=0.0, le=MAX_SIGMA,
                         description="Gaussian blur of the photo in the composite (pixels).")
    alpha: float = Field(0.5, ge=0.0, le=1.0,
                         description="Weight of the blurred photo in the composite.")


# The demo's crop can reach twice the photo's side (its margins and squaring): four times
# its pixels. The composite's float64 blur (an edge-padded copy, its spectrum, the inverse)
# peaks near 160 bytes a pixel, against an encoded answer's 12.
CROP_PIXELS_PER_PHOTO_PIXEL = 4
COMPOSITE_TO_ANSWER_BYTES = 160 // ANSWER_BYTES_PER_PIXEL


def answer_pixels(photo_pixels: int, output: str) -> int:
    """The answer's pixels as the memory budget counts them (the composite's work too)."""
    crop = CROP_PIXELS_PER_PHOTO_PIXEL * photo_pixels
    return crop if output == "drawing" else crop * COMPOSITE_TO_ANSWER_BYTES


def _headers(region: Region) -> dict[str, str]:
    headers = {"X-Portrait-Crop": "face" if region.face_found else "image",
               "X-Crop-Box": ",".join(str(v) for v in region.box)}
    if region.face_found is not None:
        headers["X-Face-Found"] = "true" if region.face_found else "false"
    return headers


async def portrait_image(pool: InferencePool, data: bytes, params: PortraitParams) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, PortraitServing)
    graph = version.graph("main")
    limits = DetectLimits.from_settings(pool.settings)

    def prepare() -> tuple[tuple[Image.Image, Region], Feeds]:
        image = decode_upload(pool, data)
        region = choose_region(image, params.crop, limits)
        return (image, region), {graph.inputs[0]: portrait_input(
            region_pixels(image, region), config)}

    def finish(context: tuple[Image.Image, Region], out: Feeds) -> tuple[bytes, Region]:
        # The region travels out with the answer: its headers say what was drawn.
        image, region = context
        size = (region.crop.width, region.crop.height)
        drawing = drawing_image(drawing_values(out[graph.outputs[0]]), size)
        if params.output == "drawing":
            return encode_image(drawing, "png"), region
        mixed = composite(region_pixels(image, region), drawing, params.sigma, params.alpha)
        if params.output == "composite":
            return encode_image(mixed, "png"), region
        return encode_image(paste(image, region, mixed), "png"), region

    width, height = declared_size(data)
    memory = request_memory(version, "main", data=data,
                            answer_pixels=answer_pixels(width * height, params.output))
    body, region = await staged(pool, version, "main", prepare, finish, memory)
    return Served(version, body, "image/png", _headers(region))


router = family_router()


@router.post("/portrait", operation_id="portrait", response_class=Response,
             responses={**image_ok("image/png", headers=HEADERS), **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def portrait(request: Request, pool: PoolDep,
                   params: Annotated[PortraitParams, Query()]) -> Response:
    """Draw the face as lines (U-2-Net portrait): the drawing, a composite or the full image."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await portrait_image(pool, data, params))


EXAMPLES = OperationExamples(curl={
    "portrait": f"curl --data-binary @photo.jpg -H 'content-type: image/jpeg'"
                f" '{URL}/portrait?output=composite&sigma=20&alpha=0.5' -o drawing.png",
})
