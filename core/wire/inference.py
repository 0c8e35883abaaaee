"""The request parameters every inference endpoint shares, and generated images."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SEED_MAX = 2**63 - 1


class ModelChoice(BaseModel):
    """Which model and version serve the request."""

    model: str | None = Field(None, description="Model name; the task's default when absent.")
    version: int | None = Field(
        None, ge=1, description="Version number; the model's active version when absent."
    )
    # which graphs run; X-Model-Precision names the one that did.
    precision: Literal["fp32", "int8"] | None = Field(
        None, description="fp32, or int8 (the version's INT8 variant, kept only when it"
        " passed its fidelity gate; 409 precision_unavailable for a version without one)."
        " Absent: the server's default_precision (auto: int8 where the variant passed)."
    )


class GeneratedImage(BaseModel):
    png_base64: str
    score: float | None = None


class ImagesResponse(BaseModel):
    model: str
    version: int
    seed: int | None = None
    images: list[GeneratedImage]
