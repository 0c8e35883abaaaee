"""cartoonize: photo in, same-size cartoon out (DCT-Net generator + guided filter)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from families.cartoonize import processing
from families.cartoonize.synthetic import make_cartoonize
from families.cartoonize.weights import ENTRIES
from tasks.layouts import PairedLayout
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

# The compound recipe's defaults: encoder convs frozen when fine-tuning trained weights,
# and the authors' shorter-side cap (families/cartoonize/compound.py SHORT_SIDE).
COMPOUND_FREEZE = 2
COMPOUND_SHORT_SIDE = 720


class CartoonizeHyperparameters(CommonHyperparameters):
    """DCT-Net fine-tune on photo -> cartoon pairs: one generator on whole images, or (a
    compound job, see ``parts``) the head generator on aligned face crops and/or the
    background generator on whole images."""

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    lr: float = Field(default=1e-4, gt=0, le=1)
    lr_step_epochs: int = Field(default=10, ge=1, description="StepLR period (epochs)")
    lr_gamma: float = Field(default=0.9, gt=0, le=1)
    # Number of leading generator convs kept frozen: 0 = none, k = conv0..conv{k-1}.
    # Only the encoder (conv0..conv4) can be frozen.
    freeze_encoder_up_to: int | None = Field(
        default=None, ge=0, le=5,
        description="leading encoder convs kept frozen (k: conv0..conv{k-1}). None: the"
                    " fine-tuning article's recipe for a compound job from trained weights"
                    f" ({COMPOUND_FREEZE}: conv0, conv1), none otherwise")
    ssim_weight: float = Field(default=0.5, ge=0)
    image_size: int = Field(default=256, ge=16, le=1024)
    hflip_prob: float = Field(default=0.5, ge=0, le=1)
    color_jitter: float = Field(default=0.1, ge=0, lt=1, description="brightness/contrast/sat")
    scale_range: tuple[float, float] = (0.9, 1.1)
    save_every: int = Field(default=5, ge=1, description="numbered snapshot every N epochs")
    early_stop_patience: int | None = Field(default=5, ge=1, description="None disables")
    # DCT-Net as its authors ship a style (a background and a head generator).
    parts: Literal["head", "background", "both"] | None = Field(
        default=None,
        description="compound fine-tune: which generators learn (head: on 288x288 faces"
                    " aligned by the face stage; background: on whole images). None: both"
                    " when the base is a compound version, else a plain one-generator"
                    " fine-tune. head or both on a plain dctnet base builds a compound"
                    " version whose generators start from the base's")
    short_side: int | None = Field(
        default=None, ge=16, le=2048,
        description="compound versions: the shorter side the photo shrinks to before both"
                    " generators (a compound base fixes it; 720, the authors' rule)")

    @model_validator(mode="before")
    @classmethod
    def _compound(cls, data: Any) -> Any:
        # A compound base fixes short_side (TaskSpec.fixed_by_base): its job trains both
        # generators unless told which. parts on a plain base builds a compound.
        if not isinstance(data, dict):
            return data
        parts, short = data.get("parts"), data.get("short_side")
        if parts is None and short is not None:
            return {**data, "parts": "both"}
        if parts is not None and short is None:
            if parts == "background":
                raise ValueError(
                    "parts='background' needs a compound base (one with a head graph): on"
                    " a plain base the published head would be an untrained copy of its"
                    " generator; use parts='head' or 'both', or leave parts out for a plain"
                    " fine-tune")
            return {**data, "short_side": COMPOUND_SHORT_SIDE}
        return data

    @model_validator(mode="after")
    def _one_device_for_compound(self) -> CartoonizeHyperparameters:
        # Its steps call both generators directly; data-parallel wrapping does not see them.
        if self.parts is not None and self.devices > 1:
            raise ValueError("a compound job (parts) trains on one device: devices must be 1")
        return self

    @field_validator("image_size")
    @classmethod
    def _multiple_of_4(cls, v: int) -> int:
        # The generator downsamples twice with TF-style stride-2 padding.
        if v % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {v}")
        return v

    @field_validator("scale_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("scale_range must be (low, high) with 0 < low <= high")
        return v


def _preview(directory: Path, graphs: Mapping[str, Any], config: Mapping[str, Any]) -> bytes:
    # imported here: onnxruntime and the face stage are not for every importer of the spec
    from families.cartoonize.preview import make_preview

    return make_preview(directory, graphs, config)


class CartoonizeServing(ServingConfig):
    """The graph sees the photo with its long side capped at ``max_side`` and both sides
    rounded down to ``multiple_of``, in ``color_order``, scaled to ``input_range``."""

    max_side: int = Field(ge=16)
    multiple_of: int = Field(ge=1)
    color_order: Literal["BGR", "RGB"]
    input_range: Range
    output_range: Range
    # Versions with a head graph (DCT-Net's compound): the photo shrinks until its shorter
    # side is at most this before both generators (the authors' rule; compound.py).
    short_side: int | None = Field(default=None, ge=16)


SPEC = register_task(TaskSpec(
    name="cartoonize",
    description="photo in, same-size cartoon out",
    default_model="cartoon",
    archs=("dctnet", "dctnet-compound"),
    # image f32[N,3,H,W] in input_range, H and W multiples of 4
    #   -> cartoon f32[N,3,H,W] in output_range (guided filter + clip inside the graph)
    # A compound version adds the head generator, fed 288x288 aligned face crops; its blend
    # mask (1,1,288,288 in [0, 1]) is a constant output, so a head never loses its mask.
    graphs={"main": GraphIO("model.onnx", ("image",), ("cartoon",)),
            "head": GraphIO("head.onnx", ("image",), ("cartoon", "mask"), optional=True)},
    serving=CartoonizeServing,
    hyperparameters=CartoonizeHyperparameters,
    layout=PairedLayout(
        folders=("train/photo", "train/cartoon"), names=("photo", "cartoon"),
        expected="train/photo/ and train/cartoon/ (optional val/photo/ and val/cartoon/)",
    ),
    # L1 + ssim_weight * (1 - SSIM) against the cartoons
    gate=GateRule("loss", "min"),
    # From scratch the recipe's 1e-4 is too slow to beat the identity map in a few epochs.
    # Crops of real photos and their classical toon-filter cartoons (synthetic.py).
    starter=StarterRecipe("dctnet", {"n": 96, "real_photos": 1},
                          {"epochs": 16, "image_size": 64, "batch_size": 4, "lr": 1e-3}),
    synthetic=make_cartoonize,
    int8_gate=Int8Gate({"main": "cartoon"}, at_least={"psnr_db": 40.0}),  # vs fp32
    image_inputs=processing.main_inputs,
    preview=_preview,
    catalogue=ENTRIES,
    # A compound base (a head graph: its serving config has short_side) makes a compound
    # job; its short_side carries over.
    fixed_by_base=lambda serving: ({"short_side": int(serving["short_side"])}
                                   if serving.get("short_side") else {}),
    api="families.cartoonize.api",
    worker=("families.cartoonize.net", "families.cartoonize.compound_net",
            "families.cartoonize.trainer"),
    # DCT-Net measured at 720-2048 px: 224 (fp32) and 710 (INT8 QDQ) bytes per input value.
    # The head generator is the same network (on 288x288 crops).
    memory={role: GraphMemory({"fp32": 250.0, "int8": 780.0}, 32 * 2**20)
            for role in ("main", "head")},
))
