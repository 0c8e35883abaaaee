"""generate's endpoint (API process only): ``POST /generate``, latents in, images out."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

import numpy as np
from fastapi import Body, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidParameter
from core.wire import SEED_MAX, GeneratedImage, ImagesResponse, ModelChoice
from families.generate.processing import normal_latents
from families.generate.spec import SPEC, GenerateServing
from service.deps import PoolDep
from service.imaging import encode_image
from service.inference.budget import request_memory
from service.inference.pipelines import (
    Served,
    check_output_pixels,
    config_of,
    image_pixels,
    png_b64,
    staged_work,
)
from service.inference.pool import InferencePool
from service.openapi_docs import URL, OperationExamples
from service.routes.inference import NO_UPLOAD_ERRORS, family_router, image_ok, merge, respond
from tasks.arrays import grid, images_from_batch

MAX_GENERATE = 64
MAX_GENERATE_TOTAL = 256  # n x oversample, the most images one request may sample
DEFAULT_N = 16
GENERATE_CHUNK = 64  # rows per generator run, so oversampling never builds one huge batch


class GenerateOptions(BaseModel):
    """Generation options; in the query, or in a JSON body (which wins field by field)."""

    n: int | None = Field(None, ge=1, le=MAX_GENERATE, description="Images (default 16).")
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Random when absent; echoed in the response."
    )
    rank_by_discriminator: bool = Field(
        False, description="Sample oversample x n and keep the n the discriminator rates best."
    )
    oversample: int = Field(4, ge=1, le=MAX_GENERATE_TOTAL)
    format: Literal["grid", "json"] = "grid"


class GenerateBody(GenerateOptions):
    # Strict as a JSON body (true is not n=1); the query's strings are parsed by
    # GenerateOptions before they reach this model.
    model_config = ConfigDict(strict=True)

    latents: list[list[float]] | None = Field(
        None, description="Explicit latents: n lists of nz floats (replaces seed)."
    )


def _generate_plan(options: GenerateBody, nz: int) -> tuple[int, np.ndarray | None]:
    """(n, explicit latents or None), refusing inconsistent requests."""
    if options.latents is None:
        n = options.n or DEFAULT_N
        if options.rank_by_discriminator and n * options.oversample > MAX_GENERATE_TOTAL:
            raise InvalidParameter("oversample", f"n x oversample = {n * options.oversample};"
                                   f" the most is {MAX_GENERATE_TOTAL}")
        return n, None
    rows = options.latents
    if not 1 <= len(rows) <= 64:
        raise InvalidParameter("latents", f"give 1 to 64 latents, not {len(rows)}")
    if options.n is not None and options.n != len(rows):
        raise InvalidParameter("latents", f"n is {options.n} but {len(rows)} latents were given")
    bad = [i for i, row in enumerate(rows) if len(row) != nz]
    if bad:
        raise InvalidParameter("latents", f"each latent needs {nz} floats; entry {bad[0]} has"
                               f" {len(rows[bad[0]])}")
    z = np.asarray(rows, np.float32)
    if not np.isfinite(z).all():
        raise InvalidParameter("latents", "latents must be finite numbers")
    return len(rows), z.reshape(len(rows), nz, 1, 1)


async def generate_images(pool: InferencePool, options: GenerateBody, model: str | None,
                          version_number: int | None, precision: str | None = None) -> Served:
    version = await pool.resolve(SPEC.name, model, version_number, precision)
    config = config_of(version, GenerateServing)
    nz = config.nz
    n, explicit = _generate_plan(options, nz)
    created = n * options.oversample if explicit is None and options.rank_by_discriminator else n
    check_output_pixels(pool, "n", created * image_pixels(version, "main", 0))
    seed = None if explicit is not None else (
        options.seed if options.seed is not None else secrets.randbits(63))
    graph = version.graph("main")
    rank = options.rank_by_discriminator

    def work() -> bytes | ImagesResponse:
        if explicit is not None:
            z = explicit
        else:
            total = n * options.oversample if rank else n
            z = normal_latents(np.random.default_rng(seed), total, nz)
        parts = [graph.run({graph.inputs[0]: z[i:i + GENERATE_CHUNK]})
                 for i in range(0, len(z), GENERATE_CHUNK)]
        images = np.concatenate([p[graph.outputs[0]] for p in parts])
        scores = np.concatenate([np.ravel(p[graph.outputs[1]]) for p in parts])
        if rank and len(z) > n:
            keep = np.argsort(-scores, kind="stable")[:n]
            images, scores = images[keep], scores[keep]
        pictures = images_from_batch(images, *config.output_range)
        if options.format == "json":
            return ImagesResponse(
                model=version.manifest.model, version=version.manifest.version, seed=seed,
                images=[GeneratedImage(png_base64=png_b64(p), score=float(s))
                        for p, s in zip(pictures, scores, strict=True)],
            )
        return encode_image(grid(pictures), "png")

    need = request_memory(version, "main", rows=min(created, GENERATE_CHUNK),
                          answer_pixels=created * image_pixels(version, "main", 0))
    content = await staged_work(pool, work, need, "n")
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    media = "application/json" if options.format == "json" else "image/png"
    return Served(version, content, media, headers)


router = family_router()


class GenerateQuery(ModelChoice, GenerateOptions):
    pass


@router.post("/generate", operation_id="generate", response_class=Response,
             responses={200: {**image_ok("image/png", headers={"X-Seed": "The seed used"})[200],
                              "model": ImagesResponse},
                        **NO_UPLOAD_ERRORS})
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
        options = merge(options, body.model_dump(exclude_unset=True))
    return respond(await generate_images(pool, options, query.model, query.version,
                                         query.precision))


EXAMPLES = OperationExamples(
    curl={"generate": f"curl -X POST '{URL}/generate?n=16&seed=7' -o grid.png"},
    answers={"generate": ImagesResponse(model="anime-faces", version=1, seed=7, images=[
        GeneratedImage(png_base64="iVBORw0KGgo...", score=0.83)])},
    requests={"generate": {"n": 4, "seed": 7, "rank_by_discriminator": True,
                           "format": "json"}},
)
