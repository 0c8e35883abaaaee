"""classify's endpoint (API process only): ``POST /classify``, top-k labels as JSON."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import InvalidParameter
from core.wire import ModelChoice
from families.classify.processing import classify_input, label_names, top_k
from families.classify.spec import SPEC, ClassifyServing
from service.deps import PoolDep
from service.inference.batching import Feeds
from service.inference.budget import request_memory
from service.inference.pipelines import Served, config_of, decode_upload, staged
from service.inference.pool import InferencePool
from service.openapi_docs import URL, OperationExamples
from service.routes.inference import UPLOAD_ERRORS, family_router, one_image, respond, upload_body

DEFAULT_TOP_K = 5


class ClassifyParams(ModelChoice):
    top_k: int | None = Field(
        None, ge=1, description="How many labels (default 5, or every label of a model with"
        " fewer); asking for more than the model has is an error."
    )


class Prediction(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


async def classify_image(pool: InferencePool, data: bytes, params: ClassifyParams) -> Served:
    version = await pool.resolve(SPEC.name, params.model, params.version, params.precision)
    manifest = version.manifest
    config = config_of(version, ClassifyServing)
    if manifest.labels and params.top_k and params.top_k > len(manifest.labels):
        raise InvalidParameter("top_k", f"{manifest.ref} has {len(manifest.labels)} labels")
    graph = version.graph("main")

    def prepare() -> tuple[None, Feeds]:
        # Only a crop is used: a large JPEG decodes at a reduced scale (imaging.decode_image).
        image = decode_upload(pool, data, (2 * config.resize_shorter,) * 2)
        return None, {graph.inputs[0]: classify_input(image, config)}

    def finish(_: None, out: Feeds) -> ClassifyResponse:
        logits = np.ravel(out[graph.outputs[0]])
        k = params.top_k or min(DEFAULT_TOP_K, logits.size)
        if k > logits.size:
            raise InvalidParameter("top_k", f"{manifest.ref} has {logits.size} labels")
        best = top_k(logits, label_names(manifest.labels, logits.size), k)
        return ClassifyResponse(
            model=manifest.model, version=manifest.version,
            predictions=[Prediction(label=label, score=score) for label, score in best],
        )

    response = await staged(pool, version, "main", prepare, finish,
                            request_memory(version, "main", data=data, answer_pixels=0))
    return Served(version, response, "application/json")


router = family_router()


@router.post("/classify", operation_id="classify", response_class=Response,
             responses={200: {"model": ClassifyResponse, "description": "Top-k labels."},
                        **UPLOAD_ERRORS},
             openapi_extra=upload_body("image"))
async def classify(
    request: Request, pool: PoolDep, params: Annotated[ClassifyParams, Query()]
) -> Response:
    """The most probable labels of an image, with softmax scores."""
    async with pool.admit():  # before the body is read: a full pool reads none
        data = await one_image(request, pool)
        return respond(await classify_image(pool, data, params))


EXAMPLES = OperationExamples(
    curl={"classify": f"curl -F image=@cat.jpg '{URL}/classify?top_k=3'"},
    answers={"classify": ClassifyResponse(model="classify", version=1, predictions=[
        Prediction(label="tabby cat", score=0.61), Prediction(label="tiger cat", score=0.22)])},
)
