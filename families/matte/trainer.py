"""U-2-Net matte fine-tune (official u2net_train.py recipe): resize to 320, random crop 288,
sum of the seven side-output BCE losses, Adam 1e-3.

Images are divided by their max then ImageNet-normalised (the official ToTensorLab and our
serving preprocessing); masks are scaled to [0, 1]. Validation runs at the resize size
without crop, on the min-max normalised fused map, like the official test script; the
version is served at that size (its manifest's ``size`` is the job's ``resize``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from families.matte.spec import MatteHyperparameters
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import PairedImages, Samples
from worker.training.losses import multi_bce
from worker.training.metrics import Mean, SaliencyMetrics, minmax_normalize
from worker.training.trainers.base import Trainer
from worker.training.trainers.registry import register_trainer


def _prepare(image: Image.Image, mask: Image.Image, size: int) -> list[torch.Tensor]:
    # The official RescaleT resizes to a square, ignoring the aspect ratio; so does serving.
    return [augment.resize(augment.to_tensor(image), (size, size)),
            augment.resize(augment.to_tensor(mask), (size, size))]


def _normalize(img: torch.Tensor) -> torch.Tensor:
    return augment.imagenet_normalize(img / img.max().clamp_min(1e-6))


def _pairs(samples: Samples) -> list[tuple[Path, Path]]:
    return [(s["image"], s["mask"]) for s in samples]


class _Transform:
    def __init__(self, hp: MatteHyperparameters, train: bool) -> None:
        self.hp, self.train = hp, train

    def __call__(self, image: Image.Image, mask: Image.Image,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        ts = _prepare(image, mask, self.hp.resize)
        if self.train and gen is not None:
            ts = augment.random_crop(ts, self.hp.crop, gen)
            ts = augment.hflip(ts, self.hp.hflip_prob, gen)
        return _normalize(ts[0]), ts[1]


@register_trainer("matte")
class MatteTrainer(Trainer):
    trivial_predictor = "an all-background mask"
    hp: MatteHyperparameters

    def setup(self) -> None:
        hp = self.hp
        base = self.ctx.base_module
        self.model = (copy.deepcopy(base) if base is not None
                      else create_model(self.ctx.arch)).to(self.device)
        self.optimizers["main"] = torch.optim.Adam(
            self.model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
            weight_decay=hp.weight_decay)
        self.train_set = PairedImages(_pairs(self.splits.train), _Transform(hp, True),
                                      second_is_mask=True)
        self.val_loader = self.eval_loader(self.splits.val)

    def train_step(self, batch: Any) -> dict[str, float]:
        image, mask = batch
        with self.autocast():
            outputs = self.model(image)
        loss = multi_bce(outputs, mask)
        self.optimize(loss)
        with torch.no_grad():
            fused = multi_bce(outputs[:1], mask)
        return {"loss": loss.item(), "bce_d0": fused.item()}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        return PairedImages(_pairs(samples), _Transform(hp, False), second_is_mask=True)

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        loss, sal = Mean(), SaliencyMetrics()
        for image, mask in loader:
            image, mask = image.to(device), mask.to(device)
            outputs = module(image)
            loss.add(multi_bce(outputs, mask), len(image))
            sal.add(minmax_normalize(outputs[0].float()), mask)
        return {"loss": loss.value(), **sal.compute()}

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        # An all-background mask (all zeros) for every image.
        sal = SaliencyMetrics()
        for _, mask in loader:
            sal.add(torch.zeros_like(mask), mask)
        return sal.compute()

    @classmethod
    def eval_hyperparameters(cls, hp: Any, preprocessing: dict[str, Any]) -> Any:
        size = int(preprocessing["size"])
        return cls.hyperparams.model_validate(
            {**hp.model_dump(), "resize": size, "crop": min(int(hp.crop), size)})

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        ds = cast(PairedImages, self.val_loader.dataset)  # built by eval_dataset
        rows = []
        with torch.no_grad():
            for i in range(min(4, len(ds))):
                image, _ = ds[i]
                alpha = minmax_normalize(self.model(image[None].to(self.device))[0].float())
                alpha = alpha[0].cpu()
                rgb = augment.imagenet_denormalize(image[None])[0].clamp(0, 1)
                # Cut-out over a mid-grey so both dark and light subjects stay visible.
                cutout = rgb * alpha + 0.5 * (1 - alpha)
                rows.append([rgb, alpha, cutout])
        return [augment.save_grid(rows, folder / f"matte_epoch_{epoch:03d}.png")]

