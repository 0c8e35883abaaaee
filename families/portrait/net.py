"""The portrait family's nets: matte's U-2-Net (the same ``U2NET(3, 1)`` / ``U2NETP(3, 1)``
modules and key layout), registered for this task with the portrait graph and serving size.

The authors' ``u2net_portrait.pth`` is a full U2NET state dict; it loads strictly as
``u2net``. The served graph keeps the side output ``d1``, the map their portrait scripts
draw from (``1 - d1``), at the demo's 512x512.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from families.matte import net as matte_nets
from families.portrait.spec import SIZE
from tasks import CommonHyperparameters
from worker.nets.checkpoints import load_torch_file_strict
from worker.nets.registry import ExportGraph, ImportedWeights, OfficialLoader, register_arch

TASK = "portrait"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SideOutputOne(nn.Module):
    """Serving adapter: the graph's single output is the side map d1 (after its sigmoid)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps: tuple[torch.Tensor, ...] = self.net(image)
        return maps[1]


def _images(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    # Like a region divided by its max, then ImageNet-normalised.
    pixels = torch.rand(n, 3, size, size, generator=gen)
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def serving_config(module: nn.Module, hp: CommonHyperparameters | None = None
                   ) -> dict[str, Any]:
    # Imported weights are served at the demo's 512; a fine-tune at the side it trained at.
    size = int(getattr(hp, "size", SIZE)) if hp is not None else SIZE
    return {"size": size, "mean": list(MEAN), "std": list(STD)}


def export_graphs(module: nn.Module, config: Mapping[str, Any] | None = None
                  ) -> dict[str, ExportGraph]:
    size = int((config or serving_config(module))["size"])
    gen = torch.Generator().manual_seed(4321)
    return {"main": ExportGraph(
        module=SideOutputOne(module), input_names=("image",), output_names=("d1",),
        example_inputs=(_images(gen, 1, size),),
        dynamic_axes={"image": {0: "batch"}, "d1": {0: "batch"}},
        # One image: a 512x512 U2NET pass is costly on a CPU, and the batch axis is the
        # same dynamic axis matte's graphs already prove.
        parity_inputs=[(_images(gen, 1, size),)],
    )}


def _loader(builder: Callable[[], nn.Module]) -> OfficialLoader:
    def load(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
        return ImportedWeights(load_torch_file_strict(builder(), parts[""]))

    return load


@register_arch("u2net", task=TASK, serving_config=serving_config, export_graphs=export_graphs,
               official_parts={"": "u2net.keys.txt"},
               load_official=_loader(lambda: matte_nets.u2net()),
               description="U-2-Net full, official U2NET(3,1) layout (u2net_portrait.pth)")
def u2net(out_ch: int = 1) -> nn.Module:
    return matte_nets.u2net(out_ch)


@register_arch("u2netp", task=TASK, serving_config=serving_config,
               export_graphs=export_graphs, official_parts={"": "u2netp.keys.txt"},
               load_official=_loader(lambda: matte_nets.u2netp()),
               description="U-2-Net small, official U2NETP(3,1) layout")
def u2netp(out_ch: int = 1) -> nn.Module:
    return matte_nets.u2netp(out_ch)
