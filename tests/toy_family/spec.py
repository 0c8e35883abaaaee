"""The "invert" task: photo in, colour negative out. Torch-free (the API imports it).

A 1x1 convolution can represent the negative exactly (weight -I, bias 1), so a few epochs
on a handful of pairs learn it, and a held-out photo shows whether the served model does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from tasks import (
    CommonHyperparameters,
    GateRule,
    GraphIO,
    ImagePipeline,
    ServingConfig,
    TaskSpec,
    register_task,
)
from tasks.layouts import PairedLayout

TASK = "invert"
ARCH = "toy-invert"


class InvertHyperparameters(CommonHyperparameters):
    epochs: int = Field(default=20, ge=1, le=200)
    batch_size: int = Field(default=4, ge=1, le=64)
    lr: float = Field(default=0.05, gt=0, le=1)
    image_size: int = Field(default=32, ge=8, le=256)


class InvertServing(ServingConfig):
    size: int = Field(ge=8)


def _prepare(image: Image.Image, config: InvertServing) -> dict[str, Any]:
    small = image.resize((config.size, config.size), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, np.float32) / 255.0
    return {"image": np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])}


def _finish(outputs: dict[str, Any], image: Image.Image, config: InvertServing) -> Image.Image:
    chw = np.clip(np.rint(outputs["inverted"][0] * 255.0), 0, 255).astype(np.uint8)
    out = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), mode="RGB")
    return out.resize(image.size, Image.Resampling.BILINEAR)


SPEC = register_task(TaskSpec(
    name=TASK,
    description="photo in, colour negative out (a test-only family)",
    default_model="inverter",
    archs=(ARCH,),
    graphs={"main": GraphIO("model.onnx", ("image",), ("inverted",))},
    serving=InvertServing,
    hyperparameters=InvertHyperparameters,
    layout=PairedLayout(folders=("photos", "negatives"), names=("photo", "negative"),
                        expected="photos/ and negatives/ (paired by file name)"),
    gate=GateRule("mae", "min"),
    image_pipeline=ImagePipeline(prepare=_prepare, finish=_finish),
))
