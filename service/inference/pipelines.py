"""The generic inference pipeline: decode -> prepare -> run -> finish -> encode.

A family's endpoints (its ``api`` module) build on these stages: ``staged`` runs a
prepare / graph run / finish sequence on the pool, ``decode_upload`` bounds what an upload
may make, ``config_of`` gives the version's typed serving config. Sizes and value ranges
come from that config (validated when the version loaded), never from defaults here.
The blocking stages run on the pool's work threads; when the graph batches, the run in
between is awaited on the event loop so that waiting requests hold no thread.
``infer_image`` serves any task through its spec's ``image_pipeline`` (``POST /infer``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel

from core.errors import InvalidParameter, UnknownTask
from core.wire import ModelChoice
from service.errors import NoImagePipeline, TaskNotFound
from service.imaging import decode_image, encode_image
from service.inference.batching import Feeds
from service.inference.budget import RequestMemory, request_memory
from service.inference.pool import InferencePool
from service.inference.sessions import LoadedVersion
from tasks import ServingConfig, TaskSpec, get_task, list_tasks

C = TypeVar("C")
R = TypeVar("R")
S = TypeVar("S", bound=ServingConfig)


@dataclass
class Served:
    version: LoadedVersion
    content: bytes | BaseModel
    media_type: str = "image/png"
    headers: dict[str, str] = field(default_factory=dict)


async def staged(pool: InferencePool, version: LoadedVersion, role: str,
                 prepare: Callable[[], tuple[C, Feeds]],
                 finish: Callable[[C, Feeds], R], memory: RequestMemory) -> R:
    """prepare -> graph run -> finish; one thread hop when the graph does not batch.
    ``memory`` is reserved from the pool's budget for the whole of it."""
    graph = version.graph(role)
    async with pool.slot(memory):
        if graph.batcher is None:
            def whole() -> R:
                context, feeds = prepare()
                return finish(context, graph.run(feeds))
            return await pool.run(whole)
        with graph.batcher.preparing():  # a batch being collected waits for these rows
            context, feeds = await pool.run(prepare)
        outputs = await pool.infer(version, role, feeds)
        return await pool.run(finish, context, outputs)


def decode_upload(pool: InferencePool, data: bytes,
            reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode an upload (pixel cap checked from the header) and refuse extreme shapes.

    Decoding a 1x10000 image is cheap; what it makes later is not (a shorter-side resize
    turns it into 256x2560000). Every pipeline bounds what it creates by construction; the
    aspect-ratio limit (Settings.max_aspect_ratio) refuses the shapes no model can use.
    """
    image = decode_image(data, pool.settings.max_pixels, reduce_to)
    check_aspect_ratio(image.size, pool.settings.max_aspect_ratio)
    return image


def check_aspect_ratio(size: tuple[int, int], limit: float) -> None:
    """422 ``invalid_parameter`` naming the limit when long side / short side > ``limit``."""
    width, height = size
    if max(width, height) > limit * min(width, height):
        raise InvalidParameter(
            "image", f"the image is {width}x{height}; the longest side may be at most"
            f" {limit:g} times the shortest (TOONFORGE_MAX_ASPECT_RATIO)",
            {"width": width, "height": height, "max_aspect_ratio": limit})


def check_output_pixels(pool: InferencePool, parameter: str, pixels: int) -> None:
    """422 before any work when an answer would hold more than max_output_pixels."""
    limit = pool.settings.max_output_pixels
    if pixels > limit:
        raise InvalidParameter(parameter, f"the answer would hold {pixels} pixels; the most"
                               f" is {limit} (TOONFORGE_MAX_OUTPUT_PIXELS)")


def image_pixels(version: LoadedVersion, role: str, output: int) -> int:
    """H x W of one image of a graph output whose shape the manifest fixes (1 if not)."""
    shape = version.manifest.graphs[role].outputs[output].shape
    dims = [d for d in shape[-2:] if isinstance(d, int) and d > 0]
    return int(np.prod(dims)) if len(dims) == 2 else 1


def config_of(version: LoadedVersion, kind: type[S]) -> S:
    """The version's serving config as the type this pipeline reads (set at load)."""
    config = version.config
    assert isinstance(config, kind), f"{version.ref} has a {type(config).__name__}"
    return config


def png_b64(image: Image.Image) -> str:
    return base64.b64encode(encode_image(image, "png")).decode("ascii")


# ------------------------------------------------------------------ any task with hooks
def image_task(task: str) -> TaskSpec:
    """The spec of a task ``POST /infer/{task}`` serves: registered, with an image pipeline."""
    try:
        spec = get_task(task)
    except UnknownTask:
        raise TaskNotFound(task, list_tasks()) from None
    if spec.image_pipeline is None:
        raise NoImagePipeline(task)
    return spec


async def infer_image(pool: InferencePool, spec: TaskSpec, data: bytes, params: ModelChoice
                      ) -> Served:
    """Image in, PNG out through the task spec's ``image_pipeline`` hooks."""
    hooks = spec.image_pipeline
    assert hooks is not None  # image_task() checked
    version = await pool.resolve(spec.name, params.model, params.version, params.precision)
    graph = version.graph("main")

    def prepare() -> tuple[Image.Image, Feeds]:
        image = decode_upload(pool, data)
        feeds = hooks.prepare(image, version.config)
        missing = [name for name in graph.inputs if name not in feeds]
        if missing:  # a bug of the task's hooks, not of the request
            raise RuntimeError(f"{spec.name} prepare() gave no {missing} for {version.ref}")
        return image, feeds

    def finish(image: Image.Image, out: Feeds) -> bytes:
        return encode_image(hooks.finish(out, image, version.config), "png")

    body = await staged(pool, version, "main", prepare, finish,
                        request_memory(version, "main", data=data))
    return Served(version, body)


def answer_headers(served: Served) -> dict[str, Any]:
    """Headers every inference answer carries."""
    return {"X-Model-Version": served.version.ref,
            "X-Model-Precision": served.version.precision, **served.headers}


async def staged_work(pool: InferencePool, work: Callable[[], R], memory: RequestMemory,
                      parameter: str) -> R:
    """A request that is a batch of its own (no shared run): one slot, one thread hop.
    ``memory`` is reserved for it; ``parameter`` is what a refusal names."""
    async with pool.slot(memory, parameter):
        return await pool.run(work)
