"""U-2-Net salient-object / matte networks (``u2net`` 44.0M, ``u2netp`` 1.13M params).

Module and parameter names follow the official ``U2NET(3, 1)`` / ``U2NETP(3, 1)`` so that the
released ``u2net.pth`` / ``u2netp.pth`` load with ``strict=True``. The forward pass returns the
seven sigmoid maps ``(d0, d1, ..., d6)`` like the original: training sums a BCE loss over all
of them, serving keeps ``d0`` only.

Official checkpoint (part ``""``): the released ``u2net.pth`` / ``u2netp.pth`` state dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from tasks import CommonHyperparameters
from worker.nets.checkpoints import load_torch_file_strict
from worker.nets.registry import ExportGraph, ImportedWeights, OfficialLoader, register_arch

SIZE = 320
_MEAN = [0.485, 0.456, 0.406]
_STD = [0.229, 0.224, 0.225]


def _upsample_like(src: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
    # The official code upsamples to the skip tensor's exact size (ceil-mode pools make odd
    # sizes possible), bilinear without corner alignment.
    return functional.interpolate(src, size=tar.shape[2:], mode="bilinear", align_corners=False)


class REBNCONV(nn.Module):
    def __init__(self, in_ch: int = 3, out_ch: int = 3, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu_s1(self.bn_s1(self.conv_s1(x)))
        return out


class _RSU(nn.Module):
    """Residual U-block of the given height (RSU7 .. RSU4): pooled encoder, dilated bottom.

    Sub-module names (rebnconvin, rebnconv1..N, rebnconv(N-1)d..1d, pool1..) are those of the
    official RSU7/RSU6/RSU5/RSU4 classes.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, 1)
        for i in range(1, height - 1):
            setattr(self, f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            setattr(self, f"rebnconv{i + 1}", REBNCONV(mid_ch, mid_ch, 1))
        setattr(self, f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, 2))
        for i in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(mid_ch * 2, mid_ch, 1))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin: torch.Tensor = self.rebnconvin(x)
        enc = [self.rebnconv1(hxin)]
        for i in range(1, self.height - 1):
            hx: torch.Tensor = getattr(self, f"pool{i}")(enc[-1])
            enc.append(getattr(self, f"rebnconv{i + 1}")(hx))
        hx = getattr(self, f"rebnconv{self.height}")(enc[-1])
        # enc[k] is hx(k+1); decoder walks back up from the bottom.
        for i in range(self.height - 1, 0, -1):
            skip = enc[i - 1]
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, skip), 1))
            if i > 1:
                hx = _upsample_like(hx, enc[i - 2])
        return hx + hxin


class RSU4F(nn.Module):
    """Dilated residual block without pooling (used at the lowest resolutions)."""

    def __init__(self, in_ch: int = 3, mid_ch: int = 12, out_ch: int = 3) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, 1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, 2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, 4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, 8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, 4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, 2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin: torch.Tensor = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d: torch.Tensor = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin


def _rsu(height: int, in_ch: int, mid_ch: int, out_ch: int) -> nn.Module:
    return RSU4F(in_ch, mid_ch, out_ch) if height == 0 else _RSU(height, in_ch, mid_ch, out_ch)


# (height, in, mid, out) per stage; height 0 means RSU4F.
_U2NET_STAGES = {
    "stage1": (7, 3, 32, 64),
    "stage2": (6, 64, 32, 128),
    "stage3": (5, 128, 64, 256),
    "stage4": (4, 256, 128, 512),
    "stage5": (0, 512, 256, 512),
    "stage6": (0, 512, 256, 512),
    "stage5d": (0, 1024, 256, 512),
    "stage4d": (4, 1024, 128, 256),
    "stage3d": (5, 512, 64, 128),
    "stage2d": (6, 256, 32, 64),
    "stage1d": (7, 128, 16, 64),
}
_U2NETP_STAGES = {
    "stage1": (7, 3, 16, 64),
    "stage2": (6, 64, 16, 64),
    "stage3": (5, 64, 16, 64),
    "stage4": (4, 64, 16, 64),
    "stage5": (0, 64, 16, 64),
    "stage6": (0, 64, 16, 64),
    "stage5d": (0, 128, 16, 64),
    "stage4d": (4, 128, 16, 64),
    "stage3d": (5, 128, 16, 64),
    "stage2d": (6, 128, 16, 64),
    "stage1d": (7, 128, 16, 64),
}


class U2Net(nn.Module):
    """Six-stage nested U-structure with six side outputs fused by a 1x1 ``outconv``."""

    # Set with setattr in __init__ (names from the stage tables); declared for type checking.
    stage1: nn.Module
    stage2: nn.Module
    stage3: nn.Module
    stage4: nn.Module
    stage5: nn.Module
    stage6: nn.Module
    stage5d: nn.Module
    stage4d: nn.Module
    stage3d: nn.Module
    stage2d: nn.Module
    stage1d: nn.Module
    side1: nn.Conv2d
    side2: nn.Conv2d
    side3: nn.Conv2d
    side4: nn.Conv2d
    side5: nn.Conv2d
    side6: nn.Conv2d

    def __init__(self, stages: dict[str, tuple[int, int, int, int]], out_ch: int = 1) -> None:
        super().__init__()
        for name in ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6"):
            setattr(self, name, _rsu(*stages[name]))
        self.pool12 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool23 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool34 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool45 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool56 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name in ("stage5d", "stage4d", "stage3d", "stage2d", "stage1d"):
            setattr(self, name, _rsu(*stages[name]))
        side_in = [stages[n][3] for n in ("stage1d", "stage2d", "stage3d", "stage4d", "stage5d")]
        side_in.append(stages["stage6"][3])
        for i, ch in enumerate(side_in, start=1):
            setattr(self, f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hx1 = self.stage1(x)
        hx2 = self.stage2(self.pool12(hx1))
        hx3 = self.stage3(self.pool23(hx2))
        hx4 = self.stage4(self.pool34(hx3))
        hx5 = self.stage5(self.pool45(hx4))
        hx6 = self.stage6(self.pool56(hx5))

        hx5d = self.stage5d(torch.cat((_upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((_upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((_upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((_upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((_upsample_like(hx2d, hx1), hx1), 1))

        d1 = self.side1(hx1d)
        d2 = _upsample_like(self.side2(hx2d), d1)
        d3 = _upsample_like(self.side3(hx3d), d1)
        d4 = _upsample_like(self.side4(hx4d), d1)
        d5 = _upsample_like(self.side5(hx5d), d1)
        d6 = _upsample_like(self.side6(hx6), d1)
        d0 = self.outconv(torch.cat((d1, d2, d3, d4, d5, d6), 1))
        return tuple(torch.sigmoid(d) for d in (d0, d1, d2, d3, d4, d5, d6))


class _MaskOnly(nn.Module):
    """Serving adapter: the graph's single ``mask`` output is the fused map d0."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps: tuple[torch.Tensor, ...] = self.net(image)
        return maps[0]


def _normalised_images(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    # Like an image divided by its max then ImageNet-normalised.
    img = torch.rand(n, 3, size, size, generator=gen)
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    return (img - mean) / std


def _export_graphs(model: nn.Module, config: Mapping[str, Any] | None = None
                   ) -> dict[str, ExportGraph]:
    # The graph's fixed input side is the version's serving size (what training ran at).
    size = int((config or _serving_config(model))["size"])
    gen = torch.Generator().manual_seed(1234)
    return {
        "main": ExportGraph(
            module=_MaskOnly(model),
            input_names=("image",),
            output_names=("mask",),
            example_inputs=(_normalised_images(gen, 2, size),),
            dynamic_axes={"image": {0: "batch"}, "mask": {0: "batch"}},
            parity_inputs=[
                (_normalised_images(gen, 1, size),),
                (_normalised_images(gen, 2, size),),
            ],
        )
    }


def _serving_config(model: nn.Module, hp: CommonHyperparameters | None = None
                    ) -> dict[str, Any]:
    # The official test transform: resize to the size the weights were trained at (SIZE for
    # the official files; a fine-tune's ``resize``: it trains on crops of that size and
    # validates at it), divide by the max, ImageNet-normalise.
    size = int(getattr(hp, "resize", SIZE)) if hp is not None else SIZE
    return {"size": size, "divide_by_max": True, "mean": list(_MEAN), "std": list(_STD)}


def _loader(builder: Callable[[], U2Net]) -> OfficialLoader:
    def load(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
        return ImportedWeights(load_torch_file_strict(builder(), parts[""]))

    return load


@register_arch(
    "u2net",
    task="matte",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"": "u2net.keys.txt"},
    load_official=_loader(lambda: U2Net(_U2NET_STAGES)),
    description="U-2-Net full (44.0M params), official U2NET(3,1) layout",
)
def u2net(out_ch: int = 1) -> U2Net:
    return U2Net(_U2NET_STAGES, out_ch)


@register_arch(
    "u2netp",
    task="matte",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"": "u2netp.keys.txt"},
    load_official=_loader(lambda: U2Net(_U2NETP_STAGES)),
    description="U-2-Net small (1.13M params), official U2NETP(3,1) layout",
)
def u2netp(out_ch: int = 1) -> U2Net:
    return U2Net(_U2NETP_STAGES, out_ch)
