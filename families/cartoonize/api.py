"""cartoonize's endpoint (API process only): ``POST /cartoonize``, photo in, cartoon out.

A version with a head graph (DCT-Net as its authors ship a style) runs the compound
pipeline of compound.py: background generator on the whole photo, head generator on each
aligned face, blended back. ``faces=off``, or a version without a head, runs the
background generator alone. The answer's headers say what was done with faces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import Field

from core.errors import InvalidParameter
from core.wire import ModelChoice
from faces import DetectLimits, Face, find_faces
from families.cartoonize.compound import (
    SHORT_SIDE,
    CompoundResult,
    cartoonize_compound,
    graph_input,
    graph_output,
    work_size,
)
from families.cartoonize.processing import cartoon_graph_size, cartoon_input, cartoon_output
from families.cartoonize.spec import SPEC, CartoonizeServing
from families.cartoonize.styles import Style, StyleList, list_styles, model_of_style
from service.deps import PoolDep
from service.imaging import MEDIA_TYPES, declared_size, encode_image
from service.inference.batching import Feeds
from service.inference.budget import RequestMemory, largest_fitting, request_memory
from service.inference.pipelines import Served, config_of, decode_upload, staged, staged_work
from service.inference.pool import InferencePool
from service.inference.sessions import Graph, LoadedVersion
from service.openapi_docs import URL, OperationExamples
from service.routes.inference import (
    UPLOAD_ERRORS,
    family_router,
    image_ok,
    one_image,
    respond,
    upload_body,
)

FACE_HEADERS = {
    "X-Faces-Cartoonized": "heads the head graph drew (0: background generator only)",
    "X-Faces-Found": "faces the detector found (absent when it did not run); at most"
                     " TOONFORGE_FACE_MAX_PER_IMAGE of them, biggest first, are cartoonized",
    "X-Faces-Boxes": "JSON list of [x, y, w, h] of the cartoonized faces, in input pixels",
    "X-Faces-Mode": "compound (faces searched), off (faces=off), or no-head-graph (the"
                    " version has no head generator)",
}


class CartoonizeParams(ModelChoice):
    max_side: int | None = Field(
        None, ge=16, description="Long side the graph sees (default from the manifest, capped"
        " by the server's max_side_limit). Versions with a head graph follow the authors'"
        " rule instead: the shorter side at most 720."
    )
    style: str | None = Field(
        None, max_length=64, description="A style from GET /styles (the model serving it);"
        " give style or model, not both.")
    faces: Literal["auto", "off"] = Field(
        "auto", description="auto: a version with a head graph cartoonizes each face (up to"
        " the server's face cap) with it; off: the background generator alone."
    )
    format: Literal["png", "jpeg", "webp"] = "png"


def _run_background(graph: Graph) -> Callable[[np.ndarray], np.ndarray]:
    def run(bgr: np.ndarray) -> np.ndarray:
        out = graph.run({graph.inputs[0]: graph_input(bgr)})
        result: np.ndarray = graph_output(out[graph.outputs[0]])[0]
        return result
    return run


def _run_heads(graph: Graph) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def run(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = graph.run({graph.inputs[0]: graph_input(crops)})
        heads = graph_output(out[graph.outputs[0]])
        return heads, np.asarray(out[graph.outputs[1]][0, 0], np.float32)
    return run


def _finder(limits: DetectLimits) -> Callable[[np.ndarray], tuple[list[Face], int]]:
    def find(rgb: np.ndarray) -> tuple[list[Face], int]:
        search = find_faces(Image.fromarray(rgb), limits)
        return search.faces, search.found
    return find


def face_headers(result: CompoundResult | None, mode: str) -> dict[str, str]:
    """What the answer says about faces."""
    if result is None:
        return {"X-Faces-Cartoonized": "0", "X-Faces-Mode": mode}
    headers = {"X-Faces-Cartoonized": str(result.faces_cartoonized), "X-Faces-Mode": mode,
               "X-Faces-Boxes": json.dumps([[round(v, 1) for v in box]
                                            for box in result.heads])}
    if mode == "compound":
        headers["X-Faces-Found"] = str(result.faces_found)
    return headers


async def _compound(pool: InferencePool, version: LoadedVersion, data: bytes,
                    params: CartoonizeParams, config: CartoonizeServing) -> Served:
    """The five steps in one work-thread hop (the graphs run in it, face by face batched)."""
    search = params.faces == "auto"
    run_bg = _run_background(version.graph("main"))
    run_heads = _run_heads(version.graph("head")) if search else None
    find = _finder(DetectLimits.from_settings(pool.settings)) if search else None

    def work() -> tuple[bytes, CompoundResult]:
        image = decode_upload(pool, data)
        rgb = np.asarray(image.convert("RGB"))
        result = cartoonize_compound(rgb, run_bg, run_heads, find,
                                     short_side=config.short_side or SHORT_SIDE,
                                     long_side=pool.settings.max_side_limit)
        return encode_image(Image.fromarray(result.image), params.format), result

    width, height = declared_size(data)
    graph_w, graph_h = work_size((width, height), config.short_side or SHORT_SIDE,
                                 pool.settings.max_side_limit)
    # the background graph on the padded photo dominates; the heads add 288x288 crops
    memory = request_memory(version, "main", data=data,
                            graph_values=3 * (graph_w + 16) * (graph_h + 16))
    body, result = await staged_work(pool, work, memory, "image")
    return Served(version, body, MEDIA_TYPES[params.format],
                  face_headers(result, "compound" if search else "off"))


async def cartoonize_image(pool: InferencePool, data: bytes, params: CartoonizeParams
                           ) -> Served:
    model = params.model
    if params.style is not None:
        if model is not None:
            raise InvalidParameter("style", "give style or model, not both")
        styles = await pool.read_store(list_styles, pool.store, SPEC.name)
        model = model_of_style(styles, params.style)
    version = await pool.resolve(SPEC.name, model, params.version, params.precision)
    config = config_of(version, CartoonizeServing)
    if "head" in version.graphs:
        return await _compound(pool, version, data, params, config)
    max_side = min(params.max_side or config.max_side, pool.settings.max_side_limit)
    graph = version.graph("main")
    width, height = declared_size(data)

    def memory(side: int) -> RequestMemory:
        if not (width and height):  # no readable header: decoding refuses it, holding nothing
            return request_memory(version, "main", data=data, graph_values=0)
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
    return Served(version, body, MEDIA_TYPES[params.format],
                  face_headers(None, "off" if params.faces == "off" else "no-head-graph"))


router = family_router()


@router.post("/cartoonize", operation_id="cartoonize", response_class=Response,
             responses={**image_ok("image/png", "image/jpeg", "image/webp",
                                   headers=FACE_HEADERS), **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def cartoonize(
    request: Request, pool: PoolDep, params: Annotated[CartoonizeParams, Query()]
) -> Response:
    """Turn a photo into a cartoon of the same size (faces by the head graph, if any)."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await cartoonize_image(pool, data, params))


@router.get("/styles", operation_id="list_styles", response_model=StyleList)
async def styles(pool: PoolDep) -> StyleList:
    """The styles /cartoonize serves (?style=NAME), each with a preview and its source."""
    return StyleList(styles=await pool.read_store(list_styles, pool.store, SPEC.name))


EXAMPLES = OperationExamples(
    curl={
        "cartoonize": f"curl -F image=@photo.jpg '{URL}/cartoonize?style=3d' -o cartoon.png",
        "list_styles": f"curl '{URL}/styles'",
    },
    answers={"list_styles": StyleList(styles=[Style(
        name="3d", model="cartoon-3d", version=1, compound=True,
        preview="data:image/jpeg;base64,/9j/4AAQSkZJRg...",
        licence="Apache-2.0 (the DCT-Net repository and its ModelScope model cards)",
        source="toonforge pull dctnet-3d: https://modelscope.cn/api/v1/models/damo/"
               "cv_unet_person-image-cartoon-3d_compound-models/repo?Revision=master"
               "&FilePath=cartoon_bg.pb")])},
)
