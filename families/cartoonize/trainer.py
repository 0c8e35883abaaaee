"""DCT-Net cartoonize fine-tune: the generator learns photo -> cartoon pairs.

As in White-box cartoonization's training code, the loss is taken on the guided-filtered
generator output (the guided filter has no weights, only the generator learns); evaluation
runs the full served module (filter + clip). Inputs are BGR in [-1, 1], like serving.

A compound job (hyper-parameter ``parts``; a compound base always is one) trains DCT-Net
as its authors ship a style: the head generator on 288x288 face crops aligned by the face
stage, the background generator on whole images, or both (one optimizer over the trained
generators; the other keeps its base weights). It is validated, kept and gated on the
served answer, the whole photo through the five steps (compound_train.py), and its result
carries the base's and the identity's scores on the same held-out pairs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from core.settings import get_settings
from faces import DetectLimits
from families.cartoonize import compound_train
from families.cartoonize.compound import HEAD_SIZE, SHORT_SIDE
from families.cartoonize.compound_net import DCTNetCompound
from families.cartoonize.net import DCTNet, guided_filter
from families.cartoonize.spec import (
    COMPOUND_FREEZE,
    SPEC,
    CartoonizeHyperparameters,
    CartoonizeServing,
)
from model_store.files import MANIFEST_FILE
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import DatasetError, DatasetSource, PairedImages, Samples
from worker.training.losses import ssim
from worker.training.metrics import Mean, psnr
from worker.training.trainers.base import Trainer
from worker.training.trainers.checkpointing import atomic_save
from worker.training.trainers.context import TrainResult
from worker.training.trainers.registry import register_trainer

SNAPSHOTS_DIR = "snapshots"
ENCODER_CONVS = ("conv0", "conv1", "conv2", "conv3", "conv4")
COMPOUND_ARCH = "dctnet-compound"
# The scores a compound job's result carries besides its own (same held-out pairs).
REFERENCES = ("base", "identity")


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


class _HeadTransform:
    """The recipe's augmentation on aligned 288x288 face crops (no rotation: it would undo
    the alignment the head is served with)."""

    def __init__(self, hp: CartoonizeHyperparameters) -> None:
        self.hp = hp

    def __call__(self, photo: Image.Image, cartoon: Image.Image,
                 gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert gen is not None, "train items are keyed (index, augmentation seed)"
        hp = self.hp
        ts = [augment.to_tensor(photo), augment.to_tensor(cartoon)]
        ts = augment.color_jitter(ts, hp.color_jitter, gen)
        ts = augment.scale_crop(ts, HEAD_SIZE, hp.scale_range, gen)
        ts = augment.hflip(ts, hp.hflip_prob, gen)
        return to_model_space(ts[0]), to_model_space(ts[1])


def _shrink(hp: CartoonizeHyperparameters) -> compound_train.Shrink:
    return compound_train.Shrink(hp.short_side or SHORT_SIDE, get_settings().max_side_limit)


def _face_stage() -> DetectLimits:
    """The face stage as the API runs it (the same settings)."""
    return DetectLimits.from_settings(get_settings())


def _loader_pairs(loader: DataLoader[Any]) -> list[tuple[Path, Path]]:
    return [(Path(p), Path(c)) for photos, cartoons in loader
            for p, c in zip(photos, cartoons, strict=True)]


@register_trainer("cartoonize")
class CartoonizeTrainer(Trainer):
    trivial_predictor = "the identity map"
    hp: CartoonizeHyperparameters
    model: nn.Module  # DCTNet, or DCTNetCompound for a compound job

    def setup(self) -> None:
        base = self.ctx.base_module
        if self.hp.parts is None:
            if self.ctx.arch == COMPOUND_ARCH or isinstance(base, DCTNetCompound):
                # Jobs made through the API get parts from their compound base; a bare
                # compound architecture must say what it trains.
                raise ValueError(f"a {COMPOUND_ARCH} base trains as a compound: give the"
                                 " hyper-parameter parts ('both', 'head' or 'background')")
            self._setup_plain(base)
        else:
            self._setup_compound(base, self.hp.parts)

    def _optimizer(self, params: list[nn.Parameter]) -> None:
        hp = self.hp
        self.optimizers["main"] = torch.optim.Adam(params, lr=hp.lr)
        self.schedulers["main"] = torch.optim.lr_scheduler.StepLR(
            self.optimizers["main"], step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)

    def _setup_plain(self, base: nn.Module | None) -> None:
        hp = self.hp
        model = cast(DCTNet, copy.deepcopy(base) if base is not None
                     else create_model(self.ctx.arch)).to(self.device)
        self.model = model
        gen = model.generator
        # Layer-wise freezing: keep the first convs of the (pretrained) encoder fixed.
        for name in ENCODER_CONVS[: hp.freeze_encoder_up_to or 0]:
            getattr(gen, name).requires_grad_(False)
        self._optimizer([p for p in gen.parameters() if p.requires_grad])
        self.trained: list[tuple[str, DCTNet]] = [("main", model)]
        self.train_set = PairedImages(_pairs(self.splits.train), _TrainTransform(hp))
        self.val_loader = self.eval_loader(self.splits.val)

    def _setup_compound(self, base: nn.Module | None, parts: str) -> None:
        hp = self.hp
        if base is None:
            if parts != "both":
                other = "background" if parts == "head" else "head"
                raise ValueError(f"parts={parts!r} from scratch would publish an untrained"
                                 f" {other} generator: fine-tune a base version, or train"
                                 " parts='both'")
            model = cast(DCTNetCompound, create_model(COMPOUND_ARCH))
        elif isinstance(base, DCTNetCompound):
            model = copy.deepcopy(base)
        elif isinstance(base, DCTNet):
            model = compound_train.compound_of(base)
        else:
            raise TypeError(f"a compound job cannot start from a {type(base).__name__}")
        self.model = model.to(self.device)
        nets = {"background": model.background, "head": cast(DCTNet, model.head)}
        names = ("background", "head") if parts == "both" else (parts,)
        self.trained = [(name, nets[name]) for name in names]
        model.requires_grad_(False)  # the part not trained keeps its base weights
        frozen = hp.freeze_encoder_up_to
        if frozen is None:  # the article's recipe: a fine-tune keeps its first convs
            frozen = COMPOUND_FREEZE if base is not None else 0
        for _, net in self.trained:
            net.generator.requires_grad_(True)
            for conv in ENCODER_CONVS[:frozen]:
                getattr(net.generator, conv).requires_grad_(False)
        self._optimizer([p for p in model.parameters() if p.requires_grad])

        sets = []
        if "background" in names:
            sets.append(PairedImages(_pairs(self.splits.train), _TrainTransform(hp)))
        if "head" in names:
            crops = compound_train.write_head_crops(
                _pairs(self.splits.train), Path(self.ctx.work_dir) / compound_train.HEAD_CROPS_DIR,
                _shrink(hp), _face_stage())
            if not crops.pairs:
                raise DatasetError(
                    f"parts={parts!r} trains the head generator on aligned faces, but the face"
                    f" stage found none in the {crops.photos} training photos: give photos"
                    " with faces, or train parts='background' on a compound base")
            self.head_crops = crops.pairs
            sets.append(PairedImages(crops.pairs, _HeadTransform(hp)))
        self.train_set = sets[0] if len(sets) == 1 else compound_train.Zipped(sets)
        self.val_loader = self.eval_loader(self.splits.val)
        # What the version must beat, scored like it: the base as it was, and the photo.
        self.references: dict[str, float] = {}
        for name, module in (("base", base), ("identity", nn.Identity())):
            if module is not None:
                module.to(self.device).eval()
                for key, value in self.measure(module, self.val_loader, self.device, hp,
                                               None).items():
                    self.references[f"{name}_{key}"] = value

    def train_step(self, batch: Any) -> dict[str, float]:
        tensors = list(batch)
        total: torch.Tensor | None = None
        out: dict[str, float] = {}
        for k, (name, net) in enumerate(self.trained):
            photo, cartoon = tensors[2 * k], tensors[2 * k + 1]
            with self.autocast():
                y = guided_filter(photo, net.generator(photo), net.r, net.eps)
                l1 = (y.float() - cartoon).abs().mean()
                s = ssim(y, cartoon, data_range=2.0)
                loss = l1 + self.hp.ssim_weight * (1.0 - s)
            total = loss if total is None else total + loss
            prefix = "" if name == "main" else f"{name}_"
            out.update({f"{prefix}l1": l1.item(), f"{prefix}ssim": s.item()})
        assert total is not None
        self.optimize(total)
        out["loss"] = total.item()
        return out

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        if hp.parts is not None:
            return compound_train.PairPaths(_pairs(samples))
        return PairedImages(_pairs(samples), _EvalTransform(hp.image_size))

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        if hp.parts is not None:
            return cls._served(compound_train.torch_serve, module, loader, device, hp)
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
    def _served(cls, make: Callable[..., compound_train.Serve], module: nn.Module,
                loader: DataLoader[Any], device: torch.device, hp: Any) -> dict[str, float]:
        shrink = _shrink(hp)
        faces_of = compound_train.cached_faces(_face_stage())
        serve = make(module, device, shrink, faces_of)
        return compound_train.served_metrics(serve, _loader_pairs(loader), shrink, faces_of,
                                             hp.ssim_weight)

    @classmethod
    def served_metrics(cls, version_file: Callable[[str], Path], preprocessing: dict[str, Any],
                       module: nn.Module, data: DatasetSource, hp: Any,
                       labels: list[str] | None) -> dict[str, float]:
        """A compound job's gate scores the published graphs as /cartoonize runs them (the
        API's five steps over onnxruntime) on the held-out pairs, with the base's scores
        its job measured on the same pairs."""
        if hp.parts is None:
            return super().served_metrics(version_file, preprocessing, module, data, hp,
                                          labels)
        config = CartoonizeServing.model_validate(preprocessing)
        head = (version_file(SPEC.graphs["head"].file)
                if isinstance(module, DCTNetCompound) else None)
        model_file = version_file(SPEC.graphs["main"].file)
        version_shrink = compound_train.Shrink(config.short_side or SHORT_SIDE,
                                               get_settings().max_side_limit)

        def make(_: nn.Module, device: torch.device, shrink: compound_train.Shrink,
                 faces_of: Any) -> compound_train.Serve:
            return compound_train.onnx_serve(model_file, head, config, version_shrink,
                                             faces_of)

        _, loader, _ = cls._loader_for(data, hp, labels, "val")
        metrics = cls._served(make, module, loader, torch.device("cpu"), hp)
        with open(version_file(MANIFEST_FILE), encoding="utf-8") as f:
            recorded = json.load(f).get("metrics", {})
        metrics.update({k: float(v) for k, v in recorded.items()
                        if k.split("_", 1)[0] in REFERENCES and isinstance(v, int | float)})
        return metrics

    @classmethod
    def gate_check(cls, metrics: dict[str, float]) -> tuple[bool, str]:
        base = metrics.get("base_loss")
        if base is None:
            return True, ""
        beaten = metrics["loss"] < base
        faces = ""
        if "face_l1" in metrics and "base_face_l1" in metrics:
            faces = (f"; face_l1={metrics['face_l1']:.6g} vs the base's"
                     f" {metrics['base_face_l1']:.6g}")
        verdict = "beats" if beaten else "does not beat"
        return beaten, (f"it {verdict} its base's served loss={base:.6g} on the same"
                        f" held-out pairs{faces}")

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float]:
        # The identity map: the photo handed back as its own cartoon.
        return cls.measure(nn.Identity(), loader, torch.device("cpu"), hp, labels)

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        rows = []
        nets: list[nn.Module]
        with torch.no_grad():
            if self.hp.parts is None:
                ds = cast(PairedImages, self.val_loader.dataset)  # built by eval_dataset
                pairs = [ds[i] for i in range(min(4, len(ds)))]
                nets = [self.model] * len(pairs)
            else:  # heads on their crops, the background on the held-out photos
                tf = _EvalTransform(self.hp.image_size)
                pairs, nets = [], []
                for name, net in self.trained:
                    source = (self.head_crops if name == "head"
                              else _pairs(self.splits.val))
                    for a, b in source[:2]:
                        pairs.append(tf(Image.open(a).convert("RGB"),
                                        Image.open(b).convert("RGB"), None))
                        nets.append(net)
            for (photo, cartoon), run in zip(pairs, nets, strict=True):
                out = run(photo[None].to(self.device))[0].cpu()
                rows.append([from_model_space(t) for t in (photo, cartoon, out)])
        if not rows:
            return []
        return [augment.save_grid(rows, folder / f"cartoonize_epoch_{epoch:03d}.png")]

    def finish(self, result: TrainResult) -> None:
        if self.hp.parts is not None:
            result.arch = COMPOUND_ARCH
            result.metrics.update(self.references)

    def after_checkpoint(self, epoch: int) -> None:
        if epoch % self.hp.save_every == 0:
            folder = Path(self.ctx.work_dir) / SNAPSHOTS_DIR
            folder.mkdir(exist_ok=True)
            atomic_save({"model": self.model.state_dict(), "epoch": epoch,
                         "metrics": self.history[-1]["val"]}, folder / f"epoch_{epoch:03d}.pt")
