"""classify: image in, top-k labels with probabilities out (GoogLeNet)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from families.classify import processing
from families.classify.synthetic import make_classify
from families.classify.weights import ENTRIES
from tasks.layouts import ClassFolderLayout
from tasks.registry import (
    RGB,
    CommonHyperparameters,
    GateRule,
    GraphIO,
    GraphMemory,
    Int8Gate,
    ServingConfig,
    StarterRecipe,
    TaskSpec,
    register_task,
)


class ClassifyHyperparameters(CommonHyperparameters):
    """GoogLeNet fine-tune: new fc, frozen first layers, label smoothing, cosine LR."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(default=1e-4, ge=0)
    # Leading GoogLeNet stages kept frozen (conv1, conv2, conv3, inception3a ... 5b: 12).
    freeze_layers: int = Field(default=0, ge=0, le=12)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    class_balance: Literal["weighted_sampler", "loss_weights", "none"] = "weighted_sampler"
    # Train: resize shorter side to image_size*256/224, random crop, flip; val: centre crop.
    image_size: int = Field(default=224, ge=32, le=1024)


class ClassifyServing(ServingConfig):
    """torchvision's eval transform: Resize(resize_shorter), CenterCrop(crop), ToTensor,
    Normalize(mean, std)."""

    resize_shorter: int = Field(ge=8)
    crop: int = Field(ge=8)
    mean: RGB
    std: RGB


SPEC = register_task(TaskSpec(
    name="classify",
    description="image in, top-k labels with probabilities out",
    default_model="classify",
    archs=("googlenet",),
    # image f32[N,3,C,C] (normalised) -> logits f32[N,K]
    graphs={"main": GraphIO("model.onnx", ("image",), ("logits",))},
    serving=ClassifyServing,
    hyperparameters=ClassifyHyperparameters,
    layout=ClassFolderLayout(),
    gate=GateRule("top1", "max"),  # top-1 accuracy
    # 16 epochs, not the 4 that pass the activation gate: 4 leave near-tied classes that
    # INT8 rounding flips, so the starter would serve fp32 (docs/BENCHMARKS.md "INT8 pass
    # rate").
    starter=StarterRecipe("googlenet", {"per_class": 16},
                          {"epochs": 16, "image_size": 64, "batch_size": 8}),
    synthetic=make_classify,
    # The same top-1 label on 99% of held-out images, and (on average) the same top-5 set.
    int8_gate=Int8Gate({"main": "logits"},
                       at_least={"top1_agreement": 0.99, "top5_overlap": 0.95}),
    image_inputs=processing.main_inputs,
    catalogue=ENTRIES,
    api="families.classify.api",
    worker=("families.classify.net", "families.classify.trainer"),
    # GoogLeNet measured at 224 px: 70 (fp32) and 84 (INT8) bytes per input value.
    memory={"main": GraphMemory({"fp32": 100.0, "int8": 100.0}, 16 * 2**20)},
))
