"""DCGAN generator/discriminator in the pytorch-book chapter 7 layout (96x96 anime faces).

``NetG``/``NetD`` keep the book's ``main`` Sequential indices so ``netg_200.pth`` /
``netd_200.pth`` load strictly. ``DCGAN`` just holds both (state-dict prefixes ``netg.`` and
``netd.``) so one model version carries the pair.
"""

from __future__ import annotations

import torch
from torch import nn

from model_store.tasks import Task
from worker.nets.registry import ExportGraph, register_arch

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
        return self.main(z)


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
        return self.main(x).view(-1)


class DCGAN(nn.Module):
    """Container for the generator/discriminator pair; ``forward(z)`` generates images."""

    def __init__(self, nz: int = NZ, ngf: int = 64, ndf: int = 64) -> None:
        super().__init__()
        self.nz = nz
        self.netg = NetG(nz, ngf)
        self.netd = NetD(ndf)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.netg(z)


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


@register_arch(
    "dcgan",
    task=Task.GENERATE,
    serving={"nz": NZ, "image_size": IMAGE_SIZE, "output_range": [-1, 1]},
    export_graphs=_export_graphs,
    official_parts={"netg": "dcgan_netg.keys.txt", "netd": "dcgan_netd.keys.txt"},
    description="DCGAN NetG/NetD, pytorch-book chapter 7 layout, 96x96",
)
def dcgan(nz: int = NZ, ngf: int = 64, ndf: int = 64) -> DCGAN:
    return DCGAN(nz, ngf, ndf)
