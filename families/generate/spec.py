"""generate: latents in, anime faces out, with the discriminator's scores (DCGAN)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from families.generate import processing
from families.generate.weights import ENTRIES
from tasks.layouts import ImageFolderLayout
from tasks.registry import (
    CommonHyperparameters,
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


class GenerateHyperparameters(CommonHyperparameters):
    """DCGAN (pytorch-book chapter 7): BCE, Adam(0.5, 0.999), separate G/D learning rates."""

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=2, le=1024)
    lr_g: float = Field(default=2e-4, gt=0, le=1)
    lr_d: float = Field(default=2e-4, gt=0, le=1)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    # The book's G:D ratio: update D on every d_every-th batch, G on every g_every-th batch.
    d_every: int = Field(default=1, ge=1)
    g_every: int = Field(default=1, ge=1)
    lr_halve_every: int = Field(default=20, ge=1, description="halve both LRs every K epochs")
    nz: int = Field(default=100, ge=1, le=1024)
    ngf: int = Field(default=64, ge=4, le=512)
    ndf: int = Field(default=64, ge=4, le=512)
    num_samples: int = Field(default=64, ge=1, le=256, description="fixed-noise grid size")
    # Mode seeking (Mao et al., 2019): G's loss also gets this times 1 / (the mean L1
    # distance between two of its images over that between their latents), paired across
    # the batch's halves, so different latents must draw different pictures. 0: off.
    mode_seeking: float = Field(default=0.0, ge=0, le=100,
                                description="weight of the mode-seeking term (0: off)")


class GenerateServing(ServingConfig):
    """The generator takes ``nz``-dim normal latents; its images are in ``output_range``."""

    nz: int = Field(ge=1)
    output_range: Range


def _faces_96(root: Path, seed: int = 0, **sizes: int) -> Path:
    # The generator's images are 96x96.
    sizes.setdefault("size", 96)
    return make_faces(root, seed=seed, **sizes)


SPEC = register_task(TaskSpec(
    name="generate",
    description="latents in, generated images out (optionally ranked by the discriminator)",
    default_model="anime-faces",
    archs=("dcgan",),
    # The latent size is part of the graph; the widths are checked by the strict load.
    fixed_by_base=lambda serving: {"nz": int(serving["nz"])},
    # z f32[N,nz,1,1] -> images f32[N,3,96,96] in output_range, scores f32[N]
    # A request is a batch of its own (seeded as a whole): never shared with another.
    graphs={"main": GraphIO("model.onnx", ("z",), ("images", "scores"),
                            per_request_batch=True)},
    serving=GenerateServing,
    hyperparameters=GenerateHyperparameters,
    layout=ImageFolderLayout(),
    # Kernel inception distance of the served samples to held-out images, on a fixed
    # random conv net's features (families/generate/gan_gate.py); lower is better.
    gate=GateRule("kid", "min"),
    # Half-width nets (about a third of the compute per step) from the DCGAN paper's init,
    # 256 faces and 15 epochs: some two hundred and twenty steps, 26 held-out faces for the
    # gate. G learns faster than D (lr_g 5e-4: at 2e-4 it still drew grey noise after 120
    # steps) and seeks modes (at 0 the faces came, all alike). kid picks the epoch kept.
    starter=StarterRecipe("dcgan", {"n": 256}, {"epochs": 15, "batch_size": 16, "ngf": 32,
                                                "ndf": 32, "lr_g": 5e-4,
                                                "mode_seeking": 1.0}),
    synthetic=_faces_96,
    int8_gate=Int8Gate({"main": "images"}, at_most={"pixel_mae": 2 / 255}),
    drawn_inputs=processing.drawn_inputs,
    catalogue=ENTRIES,
    api="families.generate.api",
    worker=("families.generate.net", "families.generate.trainer"),
    # DCGAN 96 px: about 0.8 MB per latent row at batch 8 (8 KB per input value).
    memory={"main": GraphMemory({"fp32": 16384.0, "int8": 16384.0}, 16 * 2**20)},
))
