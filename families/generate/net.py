"""DCGAN generator/discriminator in the pytorch-book chapter 7 layout (96x96 anime faces).

``NetG``/``NetD`` keep the book's ``main`` Sequential indices so ``netg_200.pth`` /
``netd_200.pth`` load strictly. ``DCGAN`` just holds both (state-dict prefixes ``netg.`` and
``netd.``) so one model version carries the pair.

Official checkpoint: two parts, ``netg`` (``--weights``) and ``netd`` (``--netd``), the book's
``netg_200.pth`` / ``netd_200.pth``; old files without ``num_batches_tracked`` get zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worker.nets.checkpoints import (
    fill_num_batches_tracked,
    load_state_dict_strict,
    read_torch_file,
)
from worker.nets.registry import ExportGraph, ImportedWeights, register_arch

NZ = 100
IMAGE_SIZE = 96


class NetG(nn.Module):
    def __init__(self, nz: int = NZ, ngf: int = 64) -> None:
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 1 -> 4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # -> 8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # -> 16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # -> 32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 5, 3, 1, bias=False),  # -> 96
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.main(z)
        return out


class NetD(nn.Module):
    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 5, 3, 1, bias=False),  # 96 -> 32
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # -> 16
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # -> 8
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # -> 4
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # -> 1
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.main(x)
        return scores.view(-1)


class DCGAN(nn.Module):
    """Container for the generator/discriminator pair; ``forward(z)`` generates images."""

    def __init__(self, nz: int = NZ, ngf: int = 64, ndf: int = 64) -> None:
        super().__init__()
        self.nz = nz
        self.netg = NetG(nz, ngf)
        self.netd = NetD(ndf)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images: torch.Tensor = self.netg(z)
        return images


class _GenerateAndScore(nn.Module):
    """Serving adapter: images from latents plus the discriminator's score of each."""

    def __init__(self, gan: DCGAN) -> None:
        super().__init__()
        self.gan = gan

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.gan.netg(z)
        return images, self.gan.netd(images)


def _export_graphs(model: nn.Module) -> dict[str, ExportGraph]:
    assert isinstance(model, DCGAN)
    gen = torch.Generator().manual_seed(3456)

    def z(n: int) -> torch.Tensor:
        return torch.randn(n, model.nz, 1, 1, generator=gen)

    return {
        "main": ExportGraph(
            module=_GenerateAndScore(model),
            input_names=("z",),
            output_names=("images", "scores"),
            example_inputs=(z(2),),
            dynamic_axes={"z": {0: "batch"}, "images": {0: "batch"}, "scores": {0: "batch"}},
            parity_inputs=[(z(1),), (z(4),)],
        )
    }


def _serving_config(model: nn.Module, hp: Any = None) -> dict[str, Any]:
    # Fixed by the built net (nz, 96x96): ``hp`` changes nothing.
    # The API draws latents of the built generator's size, not the default's.
    assert isinstance(model, DCGAN)
    return {"nz": int(model.nz), "output_range": [-1, 1]}


def _load_official(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
    model = dcgan()
    for part in ("netg", "netd"):
        sub = getattr(model, part)
        sd = fill_num_batches_tracked(sub, read_torch_file(parts[part]))
        load_state_dict_strict(sub, sd, source=f"{part} ({parts[part].name})")
    return ImportedWeights(model)


@register_arch(
    "dcgan",
    task="generate",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"netg": "dcgan_netg.keys.txt", "netd": "dcgan_netd.keys.txt"},
    load_official=_load_official,
    description="DCGAN NetG/NetD, pytorch-book chapter 7 layout, 96x96",
)
def dcgan(nz: int = NZ, ngf: int = 64, ndf: int = 64) -> DCGAN:
    return DCGAN(nz, ngf, ndf)
