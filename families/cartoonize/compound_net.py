"""DCT-Net as its authors ship a style: a background generator, a head generator and the
soft mask the head is blended through (architecture ``dctnet-compound``; worker only).

A version of it holds two graphs: ``main`` (the background generator, as a plain
``dctnet`` version) and ``head`` (the head generator, which also answers the blend mask as
a constant second output, so the two travel, hash and prove together). The API runs the
five steps of families/cartoonize/compound.py over them.

Official files (ModelScope ``damo/cv_unet_person-image-cartoon*_compound-models``): the
background ``.pb`` (part ``""``, ``--weights``), the head ``.pb`` (``--head``) and
``alpha.jpg`` (``--mask``), each generator read as ``dctnet`` reads one (a frozen graph, or
a ``.npz`` of its TF variables). ``RELEASE_FILES`` names them in a release folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from faces import load_mask, soft_mask
from families.cartoonize.compound import HEAD_SIZE, SHORT_SIDE
from families.cartoonize.net import DCTNet, _export_graphs, load_tf_variables
from worker.nets.checkpoints import CheckpointUnreadable
from worker.nets.registry import ExportGraph, ImportedWeights, register_arch

# Part -> the file names a release folder holds it under, in the order they are tried:
# ModelScope's pipeline reads cartoon_bg.pb / cartoon_h.pb, the authors' GitHub
# Cartoonizer the anime release's cartoon_anime_bg.pb / cartoon_anime_h.pb.
RELEASE_FILES: dict[str, tuple[str, ...]] = {
    "": ("cartoon_bg.pb", "cartoon_anime_bg.pb"),
    "head": ("cartoon_h.pb", "cartoon_anime_h.pb"),
    "mask": ("alpha.jpg",),
}


class HeadWithMask(nn.Module):
    """The head generator's graph: (cartoon, the blend mask) for a batch of crops."""

    mask: torch.Tensor

    def __init__(self, head: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mask", mask.reshape(1, 1, HEAD_SIZE, HEAD_SIZE).float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), self.mask.expand(x.shape[0], 1, HEAD_SIZE, HEAD_SIZE)


class DCTNetCompound(nn.Module):
    """Background and head generators; ``forward`` is the background's (whole photos)."""

    mask: torch.Tensor
    head: nn.Module  # a DCTNet (tests swap in other modules)

    def __init__(self, channel: int = 32, num_blocks: int = 4) -> None:
        super().__init__()
        self.background = DCTNet(channel, num_blocks)
        self.head = DCTNet(channel, num_blocks)
        self.register_buffer("mask", torch.from_numpy(soft_mask(HEAD_SIZE)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.background(x)
        return out

    def set_mask(self, mask: np.ndarray) -> None:
        self.mask.copy_(torch.from_numpy(np.asarray(mask, np.float32)))


def _crops(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, 3, HEAD_SIZE, HEAD_SIZE, generator=gen) * 2.0 - 1.0


def _compound_graphs(model: nn.Module, config: Mapping[str, Any] | None = None
                     ) -> dict[str, ExportGraph]:
    assert isinstance(model, DCTNetCompound)
    graphs = _export_graphs(model.background)
    gen = torch.Generator().manual_seed(8901)
    axes = {0: "batch", 2: "height", 3: "width"}
    graphs["head"] = ExportGraph(
        module=HeadWithMask(model.head, model.mask),
        input_names=("image",),
        output_names=("cartoon", "mask"),
        example_inputs=(_crops(gen, 2),),
        dynamic_axes={"image": dict(axes), "cartoon": dict(axes), "mask": {0: "batch"}},
        parity_inputs=[(_crops(gen, 1),), (_crops(gen, 2),)],
    )
    return graphs


def read_mask(path: Path) -> np.ndarray:
    """The release's ``alpha.jpg`` as the 288x288 float mask the authors blend with."""
    try:
        with Image.open(path) as image:
            return load_mask(image, HEAD_SIZE)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CheckpointUnreadable(path, f"not a mask image: {exc}"[:300]) from exc


def _load_official(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
    model = DCTNetCompound()
    load_tf_variables(model.background, parts[""])
    load_tf_variables(model.head, parts["head"])
    model.set_mask(read_mask(parts["mask"]))
    return ImportedWeights(model)


def _serving_config(model: nn.Module, hp: Any = None) -> dict[str, Any]:
    # A fine-tune keeps its base's short_side (the hyper-parameter the base fixes).
    short_side = getattr(hp, "short_side", None) or SHORT_SIDE
    return {"max_side": 720, "multiple_of": 4, "color_order": "BGR",
            "input_range": [-1, 1], "output_range": [-1, 1], "short_side": short_side}


@register_arch(
    "dctnet-compound",
    task="cartoonize",
    serving_config=_serving_config,
    export_graphs=_compound_graphs,
    official_parts={"": None, "head": None, "mask": None},
    load_official=_load_official,
    release_files=RELEASE_FILES,
    description="DCT-Net as released: background + head generators and the head's blend"
                " mask; faces aligned and cartoonized by the head",
)
def dctnet_compound(channel: int = 32, num_blocks: int = 4) -> DCTNetCompound:
    return DCTNetCompound(channel, num_blocks)
