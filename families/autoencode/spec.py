"""autoencode: reconstruct a face, interpolate between two, sample new ones."""

from __future__ import annotations

from pydantic import Field

from families.autoencode import processing
from tasks.layouts import ImageFolderLayout
from tasks.registry import (
    CommonHyperparameters,
    ExtraArtifact,
    GateRule,
    GraphIO,
    GraphMemory,
    Int8Gate,
    Range,
    ServingConfig,
    StarterRecipe,
    TaskSpec,
    register_task,
)
from tasks.synthetic import make_faces

LATENT_STATS = "latent_stats"


class AutoencodeHyperparameters(CommonHyperparameters):
    """Convolutional autoencoder: MSE + SSIM loss, cosine LR, early stopping."""

    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    ssim_weight: float = Field(default=0.5, ge=0)
    early_stop_patience: int | None = Field(default=5, ge=1, description="None disables")
    latent_dim: int = Field(default=64, ge=32, le=128)


class AutoencodeServing(ServingConfig):
    """Centre-crop square, resize to ``size``, scale to ``input_range``; latents have
    ``latent_dim`` floats; decoded images are in ``output_range``."""

    size: int = Field(ge=8)
    latent_dim: int = Field(ge=1)
    input_range: Range
    output_range: Range


SPEC = register_task(TaskSpec(
    name="autoencode",
    description="reconstruct, interpolate between two images, sample new ones",
    default_model="faces-ae",
    archs=("ae",),
    fixed_by_base=lambda serving: {"latent_dim": int(serving["latent_dim"])},
    # main:    image f32[N,3,S,S] in input_range -> latent f32[N,L], reconstruction f32[N,3,S,S]
    # decoder: latent f32[N,L] -> image f32[N,3,S,S] in output_range (a path or a sample is
    #          one request's own batch)
    graphs={
        "main": GraphIO("model.onnx", ("image",), ("latent", "reconstruction")),
        "decoder": GraphIO("decoder.onnx", ("latent",), ("image",), per_request_batch=True),
    },
    serving=AutoencodeServing,
    hyperparameters=AutoencodeHyperparameters,
    layout=ImageFolderLayout(),
    # MSE + ssim_weight * (1 - SSIM) of the reconstructions
    gate=GateRule("loss", "min"),
    # Long enough to beat the mean image (the gate's trivial predictor) on the drawn faces.
    starter=StarterRecipe("ae", {"n": 64}, {"epochs": 40, "batch_size": 16,
                                            "early_stop_patience": None}),
    synthetic=make_faces,
    int8_gate=Int8Gate({"main": "reconstruction", "decoder": "image"},
                       at_most={"pixel_mae": 2 / 255}),
    image_inputs=processing.main_inputs,
    # The latent distribution fitted on the training images: /autoencode/sample draws from
    # it (from N(0, I) for a version without one).
    artifacts={LATENT_STATS: ExtraArtifact("latent_stats.npz", processing.read_latent_stats,
                                           {"latent_distribution": "fitted"})},
    api="families.autoencode.api",
    worker=("families.autoencode.net", "families.autoencode.trainer"),
    # Measured at 64 px: under 700 bytes per input value (encoder); the decoder is fed latents.
    memory={"main": GraphMemory({"fp32": 800.0, "int8": 800.0}, 16 * 2**20),
            "decoder": GraphMemory({"fp32": 16384.0, "int8": 16384.0}, 16 * 2**20)},
))
