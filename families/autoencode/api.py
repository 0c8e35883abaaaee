"""autoencode's endpoints (API process only): reconstruct, interpolate, sample."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

import numpy as np
from fastapi import Query, Request
from fastapi.responses import Response
from pydantic import Field

from core.wire import SEED_MAX, GeneratedImage, ImagesResponse, ModelChoice
from families.autoencode.processing import (
    LatentStats,
    autoencode_input,
    fitted_latents,
    interpolate,
    upscale,
)
from families.autoencode.spec import LATENT_STATS, SPEC, AutoencodeServing
from service.deps import PoolDep
from service.imaging import encode_image, read_uploads
from service.inference.batching import Feeds
from service.inference.budget import RequestMemory, request_memory
from service.inference.pipelines import (
    Served,
    check_output_pixels,
    config_of,
    decode_upload,
    png_b64,
    staged,
    staged_work,
)
from service.inference.pool import InferencePool
from service.openapi_docs import URL, OperationExamples
from service.routes.inference import (
    NO_UPLOAD_ERRORS,
    UPLOAD_ERRORS,
    family_router,
    image_ok,
    merge,
    one_image,
    respond,
    upload_body,
)
from tasks.arrays import chw_to_image, grid, images_from_batch

MAX_SAMPLES = 64
DEFAULT_STEPS = 8


class AutoencodeParams(ModelChoice):
    size: int | None = Field(
        None, ge=8, le=1024, description="Upscale the reconstruction to size x size."
    )


class InterpolateParams(ModelChoice):
    steps: int | None = Field(
        None, ge=2, le=32, description="Points on the path, both ends included (default 8);"
        " also accepted as a form field."
    )
    format: Literal["png", "json"] = "png"


class SampleParams(ModelChoice):
    n: int = Field(16, ge=1, le=MAX_SAMPLES)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)


async def reconstruct(pool: InferencePool, data: bytes, params: AutoencodeParams) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, AutoencodeServing)
    side = params.size or config.size
    check_output_pixels(pool, "size", side * side)
    graph = version.graph("main")

    def prepare() -> tuple[None, Feeds]:
        image = decode_upload(pool, data)
        return None, {graph.inputs[0]: autoencode_input(image, config)}

    def finish(_: None, out: Feeds) -> bytes:
        image = chw_to_image(out[graph.outputs[1]][0], *config.output_range)
        return encode_image(upscale(image, params.size), "png")

    body = await staged(pool, version, "main", prepare, finish,
                        request_memory(version, "main", data=data,
                                       answer_pixels=(params.size or config.size) ** 2))
    return Served(version, body)


async def interpolate_pair(pool: InferencePool, image_a: bytes, image_b: bytes,
                           params: InterpolateParams) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, AutoencodeServing)
    steps = params.steps or DEFAULT_STEPS
    check_output_pixels(pool, "steps", steps * config.size * config.size)
    encoder, decoder = version.graph("main"), version.graph("decoder")

    def prepare() -> tuple[None, Feeds]:
        pair = [autoencode_input(decode_upload(pool, d), config) for d in (image_a, image_b)]
        return None, {encoder.inputs[0]: np.concatenate(pair, axis=0)}

    def finish(_: None, out: Feeds) -> bytes | ImagesResponse:
        latent = out[encoder.outputs[0]]
        path = interpolate(latent[0], latent[1], steps)
        frames = decoder.run({decoder.inputs[0]: path})[decoder.outputs[0]]
        images = images_from_batch(frames, *config.output_range)
        if params.format == "json":
            return ImagesResponse(model=version.manifest.model, version=version.manifest.version,
                                  images=[GeneratedImage(png_base64=png_b64(i)) for i in images])
        return encode_image(grid(images, columns=len(images)), "png")

    need = request_memory(version, "main", data=image_a, rows=2,
                          answer_pixels=steps * config.size * config.size)
    second = request_memory(version, "main", data=image_b, answer_pixels=0)
    content = await staged(pool, version, "main", prepare, finish, RequestMemory(
        need.decode + second.decode, need.graph, need.answer,
        max(need.source_pixels, second.source_pixels)))
    media = "application/json" if params.format == "json" else "image/png"
    return Served(version, content, media)


async def sample(pool: InferencePool, params: SampleParams) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    config = config_of(version, AutoencodeServing)
    check_output_pixels(pool, "n", params.n * config.size * config.size)
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    decoder = version.graph("decoder")
    stats: LatentStats | None = version.artifacts.get(LATENT_STATS)

    def work() -> bytes:
        rng = np.random.default_rng(seed)
        if stats is not None:
            latents = fitted_latents(rng, params.n, stats.mean, stats.cholesky)
        else:
            latents = rng.standard_normal((params.n, config.latent_dim), dtype=np.float32)
        frames = decoder.run({decoder.inputs[0]: latents})[decoder.outputs[0]]
        pictures = images_from_batch(frames, *config.output_range)
        return encode_image(grid(pictures), "png")

    need = request_memory(version, "decoder", rows=params.n,
                          answer_pixels=params.n * config.size * config.size)
    body = await staged_work(pool, work, need, "n")
    return Served(version, body, headers={
        "X-Seed": str(seed),
        "X-Latent-Distribution": "fitted" if stats is not None else "prior",
    })


router = family_router()


@router.post("/autoencode", operation_id="autoencode", response_class=Response,
             responses={**image_ok("image/png"), **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def autoencode(
    request: Request, pool: PoolDep, params: Annotated[AutoencodeParams, Query()]
) -> Response:
    """Reconstruct an image through the autoencoder (64x64 unless size asks for more)."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await reconstruct(pool, data, params))


@router.post("/autoencode/interpolate", operation_id="autoencode_interpolate",
             response_class=Response,
             responses={200: {**image_ok("image/png")[200], "model": ImagesResponse},
                        **UPLOAD_ERRORS},
             openapi_extra=upload_body("image_a", "image_b"))
async def autoencode_interpolate(
    request: Request, pool: PoolDep, params: Annotated[InterpolateParams, Query()]
) -> Response:
    """Decode a straight path between the latents of image_a and image_b (a PNG strip)."""
    async with pool.admit():  # before the body is read: a full pool reads none
        async with pool.reading():
            images, texts = await read_uploads(
                request, ("image_a", "image_b"), pool.settings.max_upload_bytes
            )
        params = merge(params, {k: v for k, v in texts.items() if k in ("steps", "format")})
        return respond(
            await interpolate_pair(pool, images["image_a"], images["image_b"], params)
        )


@router.post("/autoencode/sample", operation_id="autoencode_sample", response_class=Response,
             responses={**image_ok("image/png", headers={
                 "X-Seed": "The seed used",
                 "X-Latent-Distribution": "fitted (the version's latent_stats) or prior (N(0, I))",
             }), **NO_UPLOAD_ERRORS})
async def autoencode_sample(pool: PoolDep, params: Annotated[SampleParams, Query()]) -> Response:
    """Decode latents sampled from the fitted latent distribution into a PNG grid."""
    return respond(await sample(pool, params))


EXAMPLES = OperationExamples(
    curl={
        "autoencode": f"curl -F image=@face.png '{URL}/autoencode?size=256' -o recon.png",
        "autoencode_interpolate": f"curl -F image_a=@a.png -F image_b=@b.png"
                                  f" '{URL}/autoencode/interpolate?steps=8' -o path.png",
        "autoencode_sample": f"curl -X POST '{URL}/autoencode/sample?n=16&seed=3'"
                             " -o samples.png",
    },
    answers={"autoencode_interpolate": ImagesResponse(model="faces-ae", version=1, images=[
        GeneratedImage(png_base64="iVBORw0KGgo...")])},
)
