"""portrait fine-tune: the U-2-Net recipe on photo/drawing pairs.

Inputs go through the served preprocessing (``processing.portrait_input``: the demo's
resize, divide by the max, ImageNet mean/std); every side output learns the drawing's ink
(``1 - drawing``), the 7 BCE losses summed, Adam 1e-3. Validation scores what the endpoint
serves, ``1 - d1`` min-max, by its mean absolute error against the held-out drawing; the
trivial drawings to beat are the blank page and an edge detector's lines.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from families.portrait import net as _nets  # noqa: F401  (registers the archs)
from families.portrait.processing import area_resize, portrait_input, split_side_by_side
from families.portrait.spec import DRAWING, PHOTO, PortraitHyperparameters, PortraitServing
from worker.nets.registry import create_model
from worker.training.datasets import Key, Samples, load_rgb
from worker.training.losses import multi_bce
from worker.training.metrics import Mean
from worker.training.trainers.base import Trainer
from worker.training.trainers.registry import register_trainer

TASK = "portrait"


def load_pair(photo: Path, drawing: Path) -> tuple[Image.Image, Image.Image]:
    """(photo RGB, drawing L); one path is an APDrawingGAN side-by-side image."""
    if photo == drawing:
        left, right = split_side_by_side(load_rgb(photo))
        return left, right.convert("L")
    with Image.open(drawing) as im:
        return load_rgb(photo), im.convert("L")


def _config(size: int) -> PortraitServing:
    return PortraitServing(size=size, mean=_nets.MEAN, std=_nets.STD)


def drawing_at(drawing: Image.Image, size: int) -> np.ndarray:
    """The drawing in [0, 1] (white paper = 1) at size x size, resized as the input is."""
    grey = np.asarray(drawing.convert("RGB"))
    return area_resize(grey, size)[:, :, 0].astype(np.float32) / 255.0


def edge_lines(photo: Image.Image, size: int) -> np.ndarray:
    """The edge detector's drawing: dark lines where the photo has edges, white elsewhere."""
    grey = photo.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), np.float32)
    peak = float(edges.max())
    return 1.0 - (edges / peak if peak > 0 else edges)


class PairItems(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """(served input, drawing in [0, 1], edge-lines drawing), all at size x size."""

    def __init__(self, samples: Samples, size: int, hflip_prob: float = 0.0) -> None:
        self.pairs = [(Path(s[PHOTO]), Path(s[DRAWING])) for s in samples]
        self.size, self.hflip_prob = size, hflip_prob

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, gen = (key, None) if isinstance(key, int) else (key[0], key[1])
        photo, drawing = load_pair(*self.pairs[i])
        if gen is not None and self.hflip_prob > 0:
            flip = torch.rand((), generator=torch.Generator().manual_seed(gen)) < self.hflip_prob
            if flip:
                photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                drawing = drawing.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = portrait_input(np.asarray(photo), _config(self.size))[0]
        return (torch.from_numpy(x), torch.from_numpy(drawing_at(drawing, self.size))[None],
                torch.from_numpy(edge_lines(photo, self.size))[None])


def served_drawing(d1: torch.Tensor) -> torch.Tensor:
    """What the endpoint serves from a batch of d1 maps: 1 - d1, min-max per image."""
    pred = 1.0 - d1.float()
    low = pred.amin(dim=(1, 2, 3), keepdim=True)
    high = pred.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(high > low, (pred - low) / (high - low).clamp_min(1e-12),
                       torch.ones_like(pred))


@register_trainer(TASK)
class PortraitTrainer(Trainer):
    trivial_predictor = "the blank page or an edge detector's lines, whichever is closer"
    hp: PortraitHyperparameters

    def setup(self) -> None:
        hp = self.hp
        base = self.ctx.base_module
        self.model = (copy.deepcopy(base) if base is not None
                      else create_model(self.ctx.arch, TASK)).to(self.device)
        self.optimizers["main"] = torch.optim.Adam(
            self.model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
            weight_decay=hp.weight_decay)
        self.train_set = PairItems(self.splits.train, hp.size, hp.hflip_prob)
        self.val_loader = self.eval_loader(self.splits.val)

    def train_step(self, batch: Any) -> dict[str, float]:
        image, drawing, _ = batch
        with self.autocast():
            outputs = self.model(image)
        loss = multi_bce(outputs, 1.0 - drawing)
        self.optimize(loss)
        return {"loss": loss.item()}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        return PairItems(samples, int(hp.size))

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        mae, loss = Mean(), Mean()
        for image, drawing, _ in loader:
            image, drawing = image.to(device), drawing.to(device)
            outputs = module(image)
            loss.add(multi_bce(outputs, 1.0 - drawing), len(image))
            mae.add((served_drawing(outputs[1]) - drawing).abs().mean(), len(image))
        return {"drawing_mae": mae.value(), "loss": loss.value()}

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        blank, edges = Mean(), Mean()
        for _, drawing, lines in loader:
            blank.add((1.0 - drawing).abs().mean(), len(drawing))
            edges.add((lines - drawing).abs().mean(), len(drawing))
        scores = {"blank_page_mae": blank.value(), "edge_lines_mae": edges.value()}
        return {"drawing_mae": min(scores.values()), **scores}

    @classmethod
    def eval_hyperparameters(cls, hp: Any, preprocessing: dict[str, Any]) -> Any:
        return cls.hyperparams.model_validate({**hp.model_dump(),
                                               "size": int(preprocessing["size"])})

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        """One row per validation pair: the drawing served, the mask-style d1, the photo."""
        ds = cast(PairItems, self.val_loader.dataset)
        rows = []
        with torch.no_grad():
            for i in range(min(self.hp.samples_per_epoch, len(ds))):
                image, drawing, _ = ds[i]
                d1 = self.model(image[None].to(self.device))[1].float().cpu()
                mean = torch.tensor(_nets.MEAN).view(3, 1, 1)
                std = torch.tensor(_nets.STD).view(3, 1, 1)
                photo = (image * std + mean).clamp(0, 1)
                rows.append([served_drawing(d1)[0], d1[0].clamp(0, 1), photo, drawing])
        if not rows:
            return []
        from worker.training.augment import save_grid

        return [save_grid(rows, folder / f"portrait_epoch_{epoch:03d}.png")]
