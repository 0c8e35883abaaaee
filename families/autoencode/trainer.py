"""Convolutional autoencoder fine-tune: MSE + ssim_weight * (1 - SSIM), Adam with cosine LR,
early stopping on the validation loss (the gate metric); at the end a full-covariance
Gaussian is fitted to the training-set latents (for /autoencode/sample)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset

from families.autoencode.net import SIZE, ConvAutoencoder
from families.autoencode.processing import fit_latent_distribution
from families.autoencode.spec import LATENT_STATS, AutoencodeHyperparameters
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import Images, Samples
from worker.training.losses import ssim
from worker.training.metrics import Mean
from worker.training.trainers.base import Trainer, _eval_loader
from worker.training.trainers.context import TrainResult
from worker.training.trainers.registry import register_trainer


def _paths(samples: Samples) -> list[Path]:
    return [s["path"] for s in samples]


class _Transform:
    def __call__(self, img: Image.Image, gen: torch.Generator | None) -> torch.Tensor:
        return augment.square(augment.to_tensor(img), SIZE)


class _Constant(nn.Module):
    """The trivial autoencoder: every image reconstructed as the mean training image."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.image.to(x.device).expand_as(x)


@register_trainer("autoencode")
class AutoencodeTrainer(Trainer):
    trivial_predictor = "the mean training image"
    hp: AutoencodeHyperparameters
    model: ConvAutoencoder

    def setup(self) -> None:
        hp, base = self.hp, self.ctx.base_module
        if base is not None:
            if base.latent_dim != hp.latent_dim:
                raise ValueError(f"base model has latent_dim={base.latent_dim}, "
                                 f"hyper-parameters ask {hp.latent_dim}")
            self.model = cast(ConvAutoencoder, copy.deepcopy(base)).to(self.device)
        else:
            self.model = cast(ConvAutoencoder,
                              create_model(self.ctx.arch, latent_dim=hp.latent_dim)).to(self.device)
        opt = torch.optim.Adam(self.model.parameters(), lr=hp.lr)
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs)
        self.train_set = Images(_paths(self.splits.train), _Transform())
        self.val_loader = self.eval_loader(self.splits.val)

    def train_step(self, batch: Any) -> dict[str, float]:
        with self.autocast():
            _, recon = self.model(batch)
        mse = functional.mse_loss(recon.float(), batch)
        s = ssim(recon, batch, data_range=1.0)
        loss = mse + self.hp.ssim_weight * (1.0 - s)
        self.optimize(loss)
        return {"loss": loss.item(), "mse": mse.item(), "ssim": s.item()}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        return Images(_paths(samples), _Transform())

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        mse, ss = Mean(), Mean()
        for x in loader:
            x = x.to(device)
            _, recon = module(x)
            mse.add(functional.mse_loss(recon.float(), x), len(x))
            ss.add(ssim(recon, x, data_range=1.0), len(x))
        return {"loss": mse.value() + hp.ssim_weight * (1 - ss.value()),
                "mse": mse.value(), "ssim": ss.value()}

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        total, n = None, 0
        for x in _eval_loader(Images(_paths(splits.train), _Transform()), hp):
            batch_sum = x.double().sum(0)
            total = batch_sum if total is None else total + batch_sum
            n += len(x)
        if total is None:
            return None
        mean = (total / n).float()[None]
        return cls.measure(_Constant(mean), loader, torch.device("cpu"), hp, labels)

    def arch_kwargs(self) -> dict[str, Any]:
        return {"latent_dim": int(self.model.latent_dim)}

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        x = next(iter(self.val_loader))[:8].to(self.device)
        with torch.no_grad():
            _, recon = self.model(x)
        rows = [list(x.cpu()), list(recon.float().cpu())]
        return [augment.save_grid(rows, folder / f"autoencode_epoch_{epoch:03d}.png")]

    def finish(self, result: TrainResult) -> None:
        # Latents of the un-augmented training images, encoded by the returned weights.
        loader = self.eval_loader(self.splits.train)
        module = cast(ConvAutoencoder, result.module)
        with torch.no_grad():
            latents = np.concatenate([module.encode(x).float().numpy() for x in loader])
        result.artifacts[LATENT_STATS] = fit_latent_distribution(latents)

