"""DCT-Net cartoonize fine-tune: the generator learns photo -> cartoon pairs.

As in White-box cartoonization's training code, the loss is taken on the guided-filtered
generator output (the guided filter has no weights, only the generator learns); evaluation
runs the full served module (filter + clip). Inputs are BGR in [-1, 1], like serving.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from families.cartoonize.net import DCTNet, guided_filter
from families.cartoonize.spec import CartoonizeHyperparameters
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import PairedImages, Samples
from worker.training.losses import ssim
from worker.training.metrics import Mean, psnr
from worker.training.trainers.base import Trainer
from worker.training.trainers.checkpointing import atomic_save
from worker.training.trainers.registry import register_trainer

SNAPSHOTS_DIR = "snapshots"
ENCODER_CONVS = ("conv0", "conv1", "conv2", "conv3", "conv4")


def to_model_space(rgb01: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (CHW or NCHW) -> BGR in [-1, 1]."""
    return rgb01.flip(-3) * 2.0 - 1.0


def from_model_space(bgr: torch.Tensor) -> torch.Tensor:
    return ((bgr.flip(-3) + 1.0) / 2.0).clamp(0, 1)


def _same_size(photo: Image.Image, cartoon: Image.Image) -> Image.Image:
    # Pairs should already match; a stray size difference must not misalign the crop.
    if cartoon.size == photo.size:
        return cartoon
    return cartoon.resize(photo.size, Image.Resampling.BILINEAR)


def _pairs(samples: Samples) -> list[tuple[Path, Path]]:
    return [(s["photo"], s["cartoon"]) for s in samples]


class _TrainTransform:
    def __init__(self, hp: CartoonizeHyperparameters) -> None:
        self.hp = hp

    def __call__(self, photo: Image.Image, cartoon: Image.Image,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert gen is not None, "train items are keyed (index, augmentation seed)"
        hp = self.hp
        ts = [augment.to_tensor(photo), augment.to_tensor(_same_size(photo, cartoon))]
        ts = augment.color_jitter(ts, hp.color_jitter, gen)
        ts = augment.scale_crop(ts, hp.image_size, hp.scale_range, gen)
        ts = augment.hflip(ts, hp.hflip_prob, gen)  # no rotation: the recipe forbids it
        return to_model_space(ts[0]), to_model_space(ts[1])


class _EvalTransform:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, photo: Image.Image, cartoon: Image.Image,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        ts = [augment.to_tensor(photo), augment.to_tensor(_same_size(photo, cartoon))]
        ts = [augment.center_crop(augment.resize_shorter(t, self.size), self.size) for t in ts]
        return to_model_space(ts[0]), to_model_space(ts[1])


@register_trainer("cartoonize")
class CartoonizeTrainer(Trainer):
    trivial_predictor = "the identity map"
    hp: CartoonizeHyperparameters
    model: DCTNet

    def setup(self) -> None:
        hp = self.hp
        base = self.ctx.base_module
        self.model = cast(DCTNet, copy.deepcopy(base) if base is not None
                          else create_model(self.ctx.arch)).to(self.device)
        gen = self.model.generator
        # Layer-wise freezing: keep the first convs of the (pretrained) encoder fixed.
        for name in ENCODER_CONVS[: hp.freeze_encoder_up_to]:
            getattr(gen, name).requires_grad_(False)
        params = [p for p in gen.parameters() if p.requires_grad]
        self.optimizers["main"] = torch.optim.Adam(params, lr=hp.lr)
        self.schedulers["main"] = torch.optim.lr_scheduler.StepLR(
            self.optimizers["main"], step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
        self.train_set = PairedImages(_pairs(self.splits.train), _TrainTransform(hp))
        self.val_loader = self.eval_loader(self.splits.val)

    def train_step(self, batch: Any) -> dict[str, float]:
        photo, cartoon = batch
        with self.autocast():
            out = guided_filter(photo, self.model.generator(photo), self.model.r, self.model.eps)
            l1 = (out.float() - cartoon).abs().mean()
            s = ssim(out, cartoon, data_range=2.0)
            loss = l1 + self.hp.ssim_weight * (1.0 - s)
        self.optimize(loss)
        return {"loss": loss.item(), "l1": l1.item(), "ssim": s.item()}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        return PairedImages(_pairs(samples), _EvalTransform(hp.image_size))

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        l1, ss, ps = Mean(), Mean(), Mean()
        for photo, cartoon in loader:
            photo, cartoon = photo.to(device), cartoon.to(device)
            out = module(photo).float()
            n = len(photo)
            l1.add((out - cartoon).abs().mean(), n)
            ss.add(ssim(out, cartoon, data_range=2.0), n)
            ps.add(psnr(out, cartoon, data_range=2.0).mean(), n)
        return {"loss": l1.value() + hp.ssim_weight * (1 - ss.value()),
                "l1": l1.value(), "ssim": ss.value(), "psnr": ps.value()}

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        # The identity map: the photo handed back as its own cartoon.
        return cls.measure(nn.Identity(), loader, torch.device("cpu"), hp, labels)

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        ds = cast(PairedImages, self.val_loader.dataset)  # built by eval_dataset
        rows = []
        with torch.no_grad():
            for i in range(min(4, len(ds))):
                photo, cartoon = ds[i]
                out = self.model(photo[None].to(self.device))[0].cpu()
                rows.append([from_model_space(t) for t in (photo, cartoon, out)])
        return [augment.save_grid(rows, folder / f"cartoonize_epoch_{epoch:03d}.png")]

    def after_checkpoint(self, epoch: int) -> None:
        if epoch % self.hp.save_every == 0:
            folder = Path(self.ctx.work_dir) / SNAPSHOTS_DIR
            folder.mkdir(exist_ok=True)
            atomic_save({"model": self.model.state_dict(), "epoch": epoch,
                         "metrics": self.history[-1]["val"]}, folder / f"epoch_{epoch:03d}.pt")

