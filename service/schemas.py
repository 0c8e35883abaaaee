"""The wire contract: request parameters and JSON responses of every route."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from model_store.tasks import Task

MAX_GENERATE = 64
MAX_GENERATE_TOTAL = 256  # n x oversample, the most images one request may sample
SEED_MAX = 2**63 - 1


class ModelChoice(BaseModel):
    """Which model and version serve the request."""

    model: str | None = Field(None, description="Model name; the task's default when absent.")
    version: int | None = Field(
        None, ge=1, description="Version number; the model's active version when absent."
    )


class CartoonizeParams(ModelChoice):
    max_side: int | None = Field(
        None, ge=16, description="Long side the graph sees (default from the manifest, capped"
        " by the server's max_side_limit)."
    )
    format: Literal["png", "jpeg", "webp"] = "png"


class MatteParams(ModelChoice):
    output: Literal["mask", "cutout", "composite"] = "mask"
    background: str = Field(
        "#ffffff", pattern=r"^#[0-9a-fA-F]{6}$", description="Composite colour, #rrggbb."
    )
    format: Literal["png", "webp", "jpeg"] = Field(
        "png", description="jpeg only for mask and composite (it has no alpha)."
    )


class ClassifyParams(ModelChoice):
    top_k: int | None = Field(
        None, ge=1, description="How many labels (default 5, or every label of a model with"
        " fewer); asking for more than the model has is an error."
    )


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
    latents: list[list[float]] | None = Field(
        None, description="Explicit latents: n lists of nz floats (replaces seed)."
    )


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
    n: int = Field(16, ge=1, le=MAX_GENERATE)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)


class Prediction(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


class GeneratedImage(BaseModel):
    png_base64: str
    score: float | None = None


class ImagesResponse(BaseModel):
    model: str
    version: int
    seed: int | None = None
    images: list[GeneratedImage]


class ModelInfo(BaseModel):
    name: str
    task: Task
    versions: list[int]
    active: int | None
    is_default: bool


class VersionSummary(BaseModel):
    version: int
    arch: str
    created_at: str
    description: str
    parity_passed: bool
    source: str
    parent: str | None
    metrics: dict[str, Any]


class ModelDetail(ModelInfo):
    loaded_version: int | None
    version_summaries: list[VersionSummary]


class ActivateRequest(BaseModel):
    version: int = Field(ge=1)


class ActivateResponse(BaseModel):
    name: str
    active: int
    previous: int | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelReadiness(BaseModel):
    name: str
    task: Task | None
    active_version: int | None
    loaded_version: int | None
    providers: list[str]
    ready: bool
    error: str | None


class Readiness(BaseModel):
    ready: bool
    models: list[ModelReadiness]
