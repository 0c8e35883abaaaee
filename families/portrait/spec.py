"""portrait: photo in, line drawing out (U-2-Net ``u2net_portrait``), as its authors ship it.

The served graph is the full U2NET's side output ``d1`` at 512x512; the API cuts the
biggest face the way the authors' demo does, turns ``1 - d1`` into the drawing (min-max)
and, when asked, blends it with a blurred copy of the photo (their composite script).
"""

from __future__ import annotations

from pydantic import Field

from families.portrait import processing
from families.portrait.layout import PortraitLayout
from families.portrait.synthetic import make_portrait
from tasks.registry import (
    RGB,
    CommonHyperparameters,
    GateRule,
    GraphIO,
    Int8Gate,
    ServingConfig,
    StarterRecipe,
    TaskSpec,
    register_task,
)

SIZE = 512  # the demo's crop side and the released weights' training size


class PortraitHyperparameters(CommonHyperparameters):
    """The U-2-Net recipe on photo/drawing pairs: the 7 side-output BCE losses summed, Adam
    1e-3; the target of every side output is the drawing's ink (1 - drawing)."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=256)
    lr: float = Field(default=1e-3, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    size: int = Field(default=SIZE, ge=32, le=1024, description="training and serving side")
    hflip_prob: float = Field(default=0.5, ge=0, le=1)
    samples_per_epoch: int = Field(default=4, ge=0, le=16,
                                   description="validation pairs drawn in each epoch's sheet")


class PortraitServing(ServingConfig):
    """The demo's input: a size x size region divided by its max, ImageNet mean/std."""

    size: int = Field(ge=32)
    mean: RGB
    std: RGB


SPEC = register_task(TaskSpec(
    name="portrait",
    description="photo in, line drawing of the face out (or a composite with the photo)",
    default_model="portrait",
    archs=("u2net", "u2netp"),
    # image f32[N,3,S,S] -> d1 f32[N,1,S,S] (side output 1 after sigmoid: the line "mask")
    graphs={"main": GraphIO("model.onnx", ("image",), ("d1",))},
    serving=PortraitServing,
    hyperparameters=PortraitHyperparameters,
    layout=PortraitLayout(),
    # mean absolute error of the served drawing against the held-out drawing, in [0, 1]
    gate=GateRule("drawing_mae", "min"),
    starter=StarterRecipe("u2netp", {"n": 16},
                          {"epochs": 3, "size": 64, "batch_size": 4}),
    synthetic=make_portrait,
    # The served drawing is 1 - d1 min-max normalised: its MAE equals the map's.
    int8_gate=Int8Gate({"main": "d1"}, at_most={"mask_mae": 2 / 255}),
    image_inputs=processing.main_inputs,
    api="families.portrait.api",
    worker="families.portrait.trainer",
))
