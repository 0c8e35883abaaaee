"""GoogLeNet classify fine-tune: a new fc for the dataset's classes, auxiliary heads dropped,
the first ``freeze_layers`` stages frozen, label smoothing, cosine LR, class balancing.

Optimizer: SGD with momentum 0.9 by default (the usual choice for fine-tuning an ImageNet
GoogLeNet; Adam is available). Cosine annealing runs over the job's epochs. Labels are the
sorted class folder names. Frozen stages also keep their BatchNorm statistics frozen (eval
mode), otherwise "frozen" layers would still drift with small fine-tune batches.

The kept epoch and the gate both go by validation top-1; a version only goes live when its
top-1 beats chance (1/K) by ``gate_margin``. Training crops ``image_size`` (from the shorter
side resized to ``image_size * 256 / 224``) and the version is served at exactly that.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset

from families.classify.net import GoogLeNet, resize_shorter_for
from families.classify.spec import ClassifyHyperparameters
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import DatasetError, LabelledImages, Samples
from worker.training.metrics import classification_metrics, confusion_matrix
from worker.training.trainers.base import Trainer
from worker.training.trainers.context import TrainResult
from worker.training.trainers.registry import register_trainer

# Parameterised stages in forward order: what ``freeze_layers`` counts.
STAGES = ("conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a",
          "inception4b", "inception4c", "inception4d", "inception4e", "inception5a",
          "inception5b")


def resize_for(image_size: int) -> int:
    """The resize-shorter size that keeps torchvision's 256 -> 224 ratio (the served one)."""
    return resize_shorter_for(image_size)


def labelled(samples: Samples, labels: Sequence[str]) -> list[tuple[Path, int]]:
    """``(path, class index)`` of labelled samples, the index being the label's position in
    ``labels`` (the outputs of the model that is trained or evaluated)."""
    ids = {name: i for i, name in enumerate(labels)}
    out = []
    for sample in samples:
        label = sample["label"]
        if isinstance(label, int):
            out.append((sample["path"], label))
            continue
        if label not in ids:
            raise DatasetError(f"sample {sample['path']} has label {label!r}, not one of"
                               f" {sorted(ids)}")
        out.append((sample["path"], ids[label]))
    return out


class _Transform:
    def __init__(self, image_size: int, train: bool) -> None:
        self.size, self.train = image_size, train

    def __call__(self, img: Image.Image, gen: torch.Generator | None) -> torch.Tensor:
        t = augment.resize_shorter(augment.to_tensor(img), resize_for(self.size))
        if self.train and gen is not None:
            t = augment.hflip(augment.random_crop([t], self.size, gen), 0.5, gen)[0]
        else:
            t = augment.center_crop(t, self.size)
        return augment.imagenet_normalize(t)


def _logits(out: Any) -> torch.Tensor:
    logits: torch.Tensor = out[0] if isinstance(out, tuple) else out
    return logits


@register_trainer("classify")
class ClassifyTrainer(Trainer):
    gate_margin = 0.05  # top-1 must beat chance by this much before a version goes live
    trivial_predictor = "chance: 1/K"
    hp: ClassifyHyperparameters
    train_set: LabelledImages

    def setup(self) -> None:
        hp, ctx = self.hp, self.ctx
        if not self.splits.classes:
            raise DatasetError("a classify index needs its labels")
        self.class_names = list(self.splits.classes)
        k = len(self.class_names)
        if ctx.base_module is None:
            model = cast(GoogLeNet, create_model(ctx.arch, num_classes=k, aux_logits=False,
                                                 dropout=hp.dropout))
        else:
            model = cast(GoogLeNet, copy.deepcopy(ctx.base_module))
            # A base already trained on exactly these labels keeps its fc; otherwise a new one.
            if ctx.base_labels != self.class_names or model.fc.out_features != k:
                model.fc = nn.Linear(model.fc.in_features, k)
            # The aux heads are sized for the old classes and never served: drop them.
            model.aux1 = model.aux2 = None
            model.aux_logits = False
            model.num_classes = k
            model.dropout.p = hp.dropout
        self.model = model.to(self.device)
        self.frozen = [getattr(self.model, s) for s in STAGES[: hp.freeze_layers]]
        for m in self.frozen:
            m.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs)
        self.train_set = LabelledImages(labelled(self.splits.train, self.class_names),
                                        _Transform(hp.image_size, True))
        self.val_loader = self.eval_loader(self.splits.val)
        counts = torch.bincount(torch.tensor(self.train_set.labels), minlength=k).double()
        # Inverse class frequency, normalised to mean 1 over the classes present.
        inv = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
        self.class_weights = (inv * (counts > 0).sum() / inv.sum()).float()

    def train_mode(self) -> None:
        self.model.train()
        for m in self.frozen:
            m.eval()

    def sample_weights(self) -> list[float] | None:
        if self.hp.class_balance != "weighted_sampler":
            return None
        return [float(self.class_weights[y]) for y in self.train_set.labels]

    def train_step(self, batch: Any) -> dict[str, float]:
        x, y = batch
        weight = (self.class_weights.to(self.device)
                  if self.hp.class_balance == "loss_weights" else None)
        with self.autocast():
            logits = _logits(self.model(x))
            loss = functional.cross_entropy(logits.float(), y, weight=weight,
                                   label_smoothing=self.hp.label_smoothing)
        self.optimize(loss)
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        if not labels:
            raise DatasetError("evaluating a classifier needs its labels")
        return LabelledImages(labelled(samples, labels), _Transform(hp.image_size, False))

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        # Chance: a constant (or random) prediction among K classes.
        k = len(labels or splits.classes or [])
        return {"top1": 1.0 / k} if k else None

    @classmethod
    def eval_hyperparameters(cls, hp: Any, preprocessing: dict[str, Any]) -> Any:
        # The served crop (resize_shorter follows it: resize_shorter_for(crop)).
        return cls.hyperparams.model_validate(
            {**hp.model_dump(), "image_size": int(preprocessing["crop"])})

    @staticmethod
    def predict(module: nn.Module, loader: DataLoader[Any],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = [], []
        for x, y in loader:
            logits.append(_logits(module(x.to(device))).float().cpu())
            labels.append(y)
        return torch.cat(logits), torch.cat(labels)

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        logits, y = cls.predict(module, loader, device)
        names = labels or [str(i) for i in range(logits.shape[1])]
        loss = functional.cross_entropy(logits, y, label_smoothing=hp.label_smoothing)
        return {"loss": float(loss), **classification_metrics(logits, y, names)}

    def labels(self) -> list[str] | None:
        return self.class_names

    def arch_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.class_names), "aux_logits": False,
                "dropout": self.hp.dropout}

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        with torch.no_grad():
            logits, y = self.predict(self.model, self.val_loader, self.device)
        cm = confusion_matrix(y, logits.argmax(1), logits.shape[1])
        path = folder / f"confusion_epoch_{epoch:03d}.png"
        confusion_image(cm, self.class_names).save(path)
        return [path]

    def finish(self, result: TrainResult) -> None:
        if self.splits.test:
            # The held-out 1/10 of the 8:1:1 split: reported, never used for selection.
            test = self.evaluate(result.module, self.eval_loader(self.splits.test), self.hp,
                                 device=torch.device("cpu"), labels=self.class_names)
            result.metrics.update({f"test_{k}": v for k, v in test.items()})


def confusion_image(cm: torch.Tensor, names: list[str], cell: int = 28) -> Image.Image:
    """Row-normalised confusion matrix as a white-to-blue heat map with counts; rows are the
    true classes (named on the left), columns the predictions."""
    k = cm.shape[0]
    margin = min(120, 8 + 7 * max((len(n) for n in names), default=1))
    img = Image.new("RGB", (margin + k * cell + 1, k * cell + 1), "white")
    draw = ImageDraw.Draw(img)
    rows = cm.double() / cm.sum(1, keepdim=True).clamp_min(1)
    for i in range(k):
        draw.text((4, i * cell + cell // 3), names[i][:16], fill="black")
        for j in range(k):
            v = float(rows[i, j])
            colour = (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255)
            box = (margin + j * cell, i * cell, margin + (j + 1) * cell, (i + 1) * cell)
            draw.rectangle(box, fill=colour, outline="grey")
            draw.text((box[0] + 4, box[1] + cell // 3), str(int(cm[i, j])),
                      fill="white" if v > 0.5 else "black")
    return img

