"""The "invert" family's worker side: its net (a 1x1 convolution) and its trainer.

Imported by the worker process only (``TOONFORGE_WORKER_PLUGINS``); the task spec it builds
on is tests/toy_family/spec.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tests.toy_family.spec import ARCH, TASK, InvertHyperparameters
from worker.nets.registry import ExportGraph, create_model, register_arch
from worker.training import augment
from worker.training.datasets import PairedImages, Samples, Splits
from worker.training.metrics import Mean
from worker.training.trainers.base import Trainer
from worker.training.trainers.registry import register_trainer


class Inverter(nn.Module):
    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.size = size  # the side the graph is trained and served at
        self.mix = nn.Conv2d(3, 3, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.mix(image)


def _export_graphs(model: nn.Module) -> dict[str, ExportGraph]:
    assert isinstance(model, Inverter)
    gen = torch.Generator().manual_seed(7)

    def images(n: int) -> torch.Tensor:
        return torch.rand(n, 3, model.size, model.size, generator=gen)

    return {"main": ExportGraph(
        module=model, input_names=("image",), output_names=("inverted",),
        example_inputs=(images(1),),
        dynamic_axes={"image": {0: "N"}, "inverted": {0: "N"}},
        parity_inputs=[(images(1),), (images(3),)],
    )}


def _serving_config(model: nn.Module) -> dict[str, Any]:
    assert isinstance(model, Inverter)
    return {"size": model.size}


@register_arch(ARCH, task=TASK, serving_config=_serving_config, export_graphs=_export_graphs,
               description="1x1 convolution (test-only family)")
def toy_invert(size: int = 32) -> Inverter:
    return Inverter(size)


class _Transform:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, photo: Image.Image, negative: Image.Image,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        side = (self.size, self.size)
        return (augment.resize(augment.to_tensor(photo), side),
                augment.resize(augment.to_tensor(negative), side))


def _pairs(samples: Samples) -> list[tuple[Path, Path]]:
    return [(s["photo"], s["negative"]) for s in samples]


@register_trainer(TASK)
class InvertTrainer(Trainer):
    hp: InvertHyperparameters

    def setup(self) -> None:
        base = self.ctx.base_module
        self.model = (copy.deepcopy(base) if base is not None
                      else create_model(self.ctx.arch, size=self.hp.image_size)).to(self.device)
        self.optimizers["main"] = torch.optim.Adam(self.model.parameters(), lr=self.hp.lr)
        self.train_set = PairedImages(_pairs(self.splits.train), _Transform(self.hp.image_size))
        self.val_loader = self.eval_loader(self.splits.val)

    def train_step(self, batch: Any) -> dict[str, float]:
        photo, negative = batch
        loss = nn.functional.mse_loss(self.model(photo), negative)
        self.optimize(loss)
        return {"loss": loss.item()}

    def arch_kwargs(self) -> dict[str, Any]:
        return {"size": int(self.model.size)}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any, labels: list[str] | None) -> Dataset:
        return PairedImages(_pairs(samples), _Transform(hp.image_size))

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader, device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        mae = Mean()
        for photo, negative in loader:
            out = module(photo.to(device)).clamp(0, 1)
            mae.add((out - negative.to(device)).abs().mean(), len(photo))
        return {"mae": mae.value()}

    @classmethod
    def trivial_metrics(cls, splits: Splits, loader: DataLoader, hp: Any,
                        labels: list[str] | None) -> dict[str, float]:
        # The identity map (the photo itself): what a model must beat to go live.
        mae = Mean()
        for photo, negative in loader:
            mae.add((photo - negative).abs().mean(), len(photo))
        return {"mae": mae.value()}

