"""One function per inference endpoint: decode -> preprocess -> run -> postprocess -> encode.

Each takes the uploaded bytes and validated parameters and returns a ``Served`` answer.
Sizes and value ranges come from the version's typed serving config (``version.config``,
validated when the version loaded), never from defaults here.
The blocking stages run on the pool's work threads; when the graph batches, the run in
between is awaited on the event loop so that waiting requests hold no thread.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel

from core.errors import InvalidParameter, UnknownTask
from core.wire import (
    MAX_GENERATE_TOTAL,
    AutoencodeParams,
    CartoonizeParams,
    ClassifyParams,
    ClassifyResponse,
    GenerateBody,
    GeneratedImage,
    ImagesResponse,
    InterpolateParams,
    MatteParams,
    ModelChoice,
    Prediction,
    SampleParams,
)
from service.errors import NoImagePipeline, TaskNotFound
from service.imaging import MEDIA_TYPES, declared_size, decode_image, encode_image
from service.inference import processing as proc
from service.inference.batching import Feeds
from service.inference.budget import RequestMemory, largest_fitting, request_memory
from service.inference.pool import InferencePool
from service.inference.sessions import LoadedVersion
from tasks import ServingConfig, TaskSpec, get_task, list_tasks
from tasks.autoencode import AutoencodeServing
from tasks.cartoonize import CartoonizeServing
from tasks.classify import ClassifyServing
from tasks.generate import GenerateServing
from tasks.matte import MatteServing

C = TypeVar("C")
R = TypeVar("R")
S = TypeVar("S", bound=ServingConfig)
DEFAULT_N = 16
DEFAULT_TOP_K = 5
DEFAULT_STEPS = 8
GENERATE_CHUNK = 64  # rows per generator run, so oversampling never builds one huge batch


@dataclass
class Served:
    version: LoadedVersion
    content: bytes | BaseModel
    media_type: str = "image/png"
    headers: dict[str, str] = field(default_factory=dict)


async def _staged(pool: InferencePool, version: LoadedVersion, role: str,
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
        context, feeds = await pool.run(prepare)
        outputs = await pool.infer(version, role, feeds)
        return await pool.run(finish, context, outputs)


def _decode(pool: InferencePool, data: bytes,
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


def _image_pixels(version: LoadedVersion, role: str, output: int) -> int:
    """H x W of one image of a graph output whose shape the manifest fixes (1 if not)."""
    shape = version.manifest.graphs[role].outputs[output].shape
    dims = [d for d in shape[-2:] if isinstance(d, int) and d > 0]
    return int(np.prod(dims)) if len(dims) == 2 else 1


def _config(version: LoadedVersion, kind: type[S]) -> S:
    """The version's serving config as the type this pipeline reads (set at load)."""
    config = version.config
    assert isinstance(config, kind), f"{version.ref} has a {type(config).__name__}"
    return config


def _png_b64(image: Image.Image) -> str:
    return base64.b64encode(encode_image(image, "png")).decode("ascii")


# ------------------------------------------------------------------ image in, image out
async def cartoonize(pool: InferencePool, data: bytes, params: CartoonizeParams) -> Served:
    version = await pool.resolve("cartoonize", params.model, params.version,
                                 params.precision)
    config = _config(version, CartoonizeServing)
    max_side = min(params.max_side or config.max_side, pool.settings.max_side_limit)
    bgr = config.color_order == "BGR"
    graph = version.graph("main")
    width, height = declared_size(data)

    def memory(side: int) -> RequestMemory:
        graph_w, graph_h = proc.cartoon_graph_size((width, height), side, config.multiple_of)
        return request_memory(version, "main", data=data, graph_values=3 * graph_w * graph_h)

    # The graph's input is capped, never tiled: a max_side whose arena would not fit one
    # request's share of the memory budget is lowered until it does, down to the version's
    # own max_side (so answers at the defaults are unchanged).
    if width and height:
        max_side = largest_fitting(pool.budget.per_request, lambda side: memory(side).total,
                                   min(max_side, config.max_side), max_side)

    def prepare() -> tuple[Image.Image, Feeds]:
        image = _decode(pool, data)
        pixels = proc.cartoon_input(image, max_side, config.multiple_of, bgr, config.input_range)
        return image, {graph.inputs[0]: pixels}

    def finish(image: Image.Image, out: Feeds) -> bytes:
        cartoon = proc.cartoon_output(out[graph.outputs[0]], image.size, bgr,
                                      config.output_range)
        return encode_image(cartoon, params.format)

    body = await _staged(pool, version, "main", prepare, finish, memory(max_side))
    return Served(version, body, MEDIA_TYPES[params.format])


async def matte(pool: InferencePool, data: bytes, params: MatteParams) -> Served:
    if params.format == "jpeg" and params.output == "cutout":
        raise InvalidParameter("format", "jpeg has no alpha channel: use png or webp for cutout")
    colour = proc.parse_colour(params.background)
    version = await pool.resolve("matte", params.model, params.version,
                                 params.precision)
    config = _config(version, MatteServing)
    graph = version.graph("main")

    def prepare() -> tuple[Image.Image, Feeds]:
        image = _decode(pool, data)
        pixels = proc.matte_input(image, config.size, config.mean, config.std,
                                  config.divide_by_max)
        return image, {graph.inputs[0]: pixels}

    def finish(image: Image.Image, out: Feeds) -> bytes:
        mask = proc.matte_mask(out[graph.outputs[0]], image.size)
        if params.output == "cutout":
            result = proc.cutout(image, mask)
        elif params.output == "composite":
            result = proc.composite(image, mask, colour)
        else:
            result = mask
        return encode_image(result, params.format)

    body = await _staged(pool, version, "main", prepare, finish,
                         request_memory(version, "main", data=data))
    return Served(version, body, MEDIA_TYPES[params.format])


async def classify(pool: InferencePool, data: bytes, params: ClassifyParams) -> Served:
    version = await pool.resolve("classify", params.model, params.version,
                                 params.precision)
    manifest = version.manifest
    config = _config(version, ClassifyServing)
    if manifest.labels and params.top_k and params.top_k > len(manifest.labels):
        raise InvalidParameter("top_k", f"{manifest.ref} has {len(manifest.labels)} labels")
    graph = version.graph("main")

    def prepare() -> tuple[None, Feeds]:
        # Only a crop is used: a large JPEG decodes at a reduced scale (imaging.decode_image).
        image = _decode(pool, data, (2 * config.resize_shorter,) * 2)
        pixels = proc.classify_input(image, config.resize_shorter, config.crop, config.mean,
                                     config.std)
        return None, {graph.inputs[0]: pixels}

    def finish(_: None, out: Feeds) -> ClassifyResponse:
        logits = np.ravel(out[graph.outputs[0]])
        top_k = params.top_k or min(DEFAULT_TOP_K, logits.size)
        if top_k > logits.size:
            raise InvalidParameter("top_k", f"{manifest.ref} has {logits.size} labels")
        labels = proc.label_names(manifest.labels, logits.size)
        best = proc.top_k(logits, labels, top_k)
        return ClassifyResponse(
            model=manifest.model, version=manifest.version,
            predictions=[Prediction(label=label, score=score) for label, score in best],
        )

    response = await _staged(pool, version, "main", prepare, finish,
                             request_memory(version, "main", data=data, answer_pixels=0))
    return Served(version, response, "application/json")


async def autoencode(pool: InferencePool, data: bytes, params: AutoencodeParams) -> Served:
    version = await pool.resolve("autoencode", params.model, params.version,
                                 params.precision)
    config = _config(version, AutoencodeServing)
    side = params.size or config.size
    check_output_pixels(pool, "size", side * side)
    graph = version.graph("main")

    def prepare() -> tuple[None, Feeds]:
        image = _decode(pool, data)
        return None, {graph.inputs[0]: proc.autoencode_input(image, config.size,
                                                               config.input_range)}

    def finish(_: None, out: Feeds) -> bytes:
        image = proc.chw_to_image(out[graph.outputs[1]][0], *config.output_range)
        return encode_image(proc.upscale(image, params.size), "png")

    body = await _staged(pool, version, "main", prepare, finish,
                         request_memory(version, "main", data=data,
                                        answer_pixels=(params.size or config.size) ** 2))
    return Served(version, body)


async def interpolate(pool: InferencePool, image_a: bytes, image_b: bytes,
                      params: InterpolateParams) -> Served:
    version = await pool.resolve("autoencode", params.model, params.version,
                                 params.precision)
    config = _config(version, AutoencodeServing)
    steps = params.steps or DEFAULT_STEPS
    check_output_pixels(pool, "steps", steps * config.size * config.size)
    encoder, decoder = version.graph("main"), version.graph("decoder")

    def prepare() -> tuple[None, Feeds]:
        pair = [proc.autoencode_input(_decode(pool, d), config.size, config.input_range)
                for d in (image_a, image_b)]
        return None, {encoder.inputs[0]: np.concatenate(pair, axis=0)}

    def finish(_: None, out: Feeds) -> bytes | ImagesResponse:
        latent = out[encoder.outputs[0]]
        path = proc.interpolate(latent[0], latent[1], steps)
        frames = decoder.run({decoder.inputs[0]: path})[decoder.outputs[0]]
        images = proc.images_from_batch(frames, *config.output_range)
        if params.format == "json":
            return ImagesResponse(model=version.manifest.model, version=version.manifest.version,
                                  images=[GeneratedImage(png_base64=_png_b64(i)) for i in images])
        return encode_image(proc.grid(images, columns=len(images)), "png")

    need = request_memory(version, "main", data=image_a, rows=2,
                          answer_pixels=steps * config.size * config.size)
    second = request_memory(version, "main", data=image_b, answer_pixels=0)
    content = await _staged(pool, version, "main", prepare, finish, RequestMemory(
        need.decode + second.decode, need.graph, need.answer,
        max(need.source_pixels, second.source_pixels)))
    media = "application/json" if params.format == "json" else "image/png"
    return Served(version, content, media)


# ------------------------------------------------------------------ latents in, images out
async def sample(pool: InferencePool, params: SampleParams) -> Served:
    version = await pool.resolve("autoencode", params.model, params.version,
                                 params.precision)
    config = _config(version, AutoencodeServing)
    check_output_pixels(pool, "n", params.n * config.size * config.size)
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    decoder = version.graph("decoder")
    stats = version.latent_stats

    def work() -> bytes:
        rng = np.random.default_rng(seed)
        if stats is not None:
            latents = proc.fitted_latents(rng, params.n, stats.mean, stats.cholesky)
        else:
            latents = rng.standard_normal((params.n, config.latent_dim), dtype=np.float32)
        frames = decoder.run({decoder.inputs[0]: latents})[decoder.outputs[0]]
        pictures = proc.images_from_batch(frames, *config.output_range)
        return encode_image(proc.grid(pictures), "png")

    need = request_memory(version, "decoder", rows=params.n,
                          answer_pixels=params.n * config.size * config.size)
    async with pool.slot(need, "n"):
        body = await pool.run(work)
    return Served(version, body, headers={
        "X-Seed": str(seed),
        "X-Latent-Distribution": "fitted" if stats is not None else "prior",
    })


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


async def generate(pool: InferencePool, options: GenerateBody, model: str | None,
                   version_number: int | None, precision: str | None = None) -> Served:
    version = await pool.resolve("generate", model, version_number, precision)
    config = _config(version, GenerateServing)
    nz = config.nz
    n, explicit = _generate_plan(options, nz)
    created = n * options.oversample if explicit is None and options.rank_by_discriminator else n
    check_output_pixels(pool, "n", created * _image_pixels(version, "main", 0))
    seed = None if explicit is not None else (
        options.seed if options.seed is not None else secrets.randbits(63))
    graph = version.graph("main")
    rank = options.rank_by_discriminator

    def work() -> bytes | ImagesResponse:
        if explicit is not None:
            z = explicit
        else:
            total = n * options.oversample if rank else n
            z = proc.normal_latents(np.random.default_rng(seed), total, nz)
        parts = [graph.run({graph.inputs[0]: z[i:i + GENERATE_CHUNK]})
                 for i in range(0, len(z), GENERATE_CHUNK)]
        images = np.concatenate([p[graph.outputs[0]] for p in parts])
        scores = np.concatenate([np.ravel(p[graph.outputs[1]]) for p in parts])
        if rank and len(z) > n:
            keep = np.argsort(-scores, kind="stable")[:n]
            images, scores = images[keep], scores[keep]
        pictures = proc.images_from_batch(images, *config.output_range)
        if options.format == "json":
            return ImagesResponse(
                model=version.manifest.model, version=version.manifest.version, seed=seed,
                images=[GeneratedImage(png_base64=_png_b64(p), score=float(s))
                        for p, s in zip(pictures, scores, strict=True)],
            )
        return encode_image(proc.grid(pictures), "png")

    need = request_memory(version, "main", rows=min(created, GENERATE_CHUNK),
                          answer_pixels=created * _image_pixels(version, "main", 0))
    async with pool.slot(need, "n"):
        content = await pool.run(work)
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    media = "application/json" if options.format == "json" else "image/png"
    return Served(version, content, media, headers)


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
        image = _decode(pool, data)
        feeds = hooks.prepare(image, version.config)
        missing = [name for name in graph.inputs if name not in feeds]
        if missing:  # a bug of the task's hooks, not of the request
            raise RuntimeError(f"{spec.name} prepare() gave no {missing} for {version.ref}")
        return image, feeds

    def finish(image: Image.Image, out: Feeds) -> bytes:
        return encode_image(hooks.finish(out, image, version.config), "png")

    body = await _staged(pool, version, "main", prepare, finish,
                         request_memory(version, "main", data=data))
    return Served(version, body)


def describe(served: Served) -> dict[str, Any]:
    """Headers every inference answer carries."""
    return {"X-Model-Version": served.version.ref,
            "X-Model-Precision": served.version.precision, **served.headers}
