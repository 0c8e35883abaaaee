"""DCGAN generate fine-tune (pytorch-book chapter 7): BCE GAN, Adam(beta1, beta2), separate
G/D learning rates, D trained on every ``d_every``-th batch and G on every ``g_every``-th,
both learning rates halved every ``lr_halve_every`` epochs, a fixed-noise grid per epoch;
optionally MSGAN's mode-seeking term in G's loss (``mode_seeking``, against collapse).

Data: images centre-cropped, resized to 96x96 and scaled to [-1, 1] (the book's
Resize/CenterCrop/Normalize(0.5, 0.5)).

Evaluation has no ground truth, so it reports what a GAN run can honestly be judged by:
the gate's sample-quality numbers (``kid`` against the held-out images and
``diversity_ratio``, families/generate/gan_gate.py), the discriminator's mean score on real
validation images and on generated ones, the diversity of generated samples in pixels (mean
pairwise distance; 0 means mode collapse) and the distance between the per-channel mean/std
of generated and real images. ``kid`` picks the published epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset

from families.generate import gan_gate
from families.generate.net import DCGAN, IMAGE_SIZE
from families.generate.spec import GenerateHyperparameters
from worker.nets.registry import create_model
from worker.training import augment
from worker.training.datasets import DatasetSource, Images, Samples
from worker.training.metrics import Mean, mean_pairwise_l2, moment_distance
from worker.training.trainers.base import Trainer
from worker.training.trainers.registry import register_trainer


def _paths(samples: Samples) -> list[Path]:
    return [s["path"] for s in samples]


class _Transform:
    def __call__(self, img: Image.Image, gen: torch.Generator | None) -> torch.Tensor:
        return augment.square(augment.to_tensor(img), IMAGE_SIZE) * 2.0 - 1.0


def _real(loader: DataLoader[Any]) -> torch.Tensor:
    """The loader's images (in [-1, 1]) in [0, 1]."""
    return (torch.cat([batch.float().cpu() for batch in loader]) + 1) / 2


def _noise(n: int, nz: int, seed: int) -> torch.Tensor:
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed))


def _dcgan_init(gan: nn.Module) -> None:
    """The DCGAN paper's initialisation for a net trained from scratch: conv weights
    N(0, 0.02), BatchNorm scales N(1, 0.02) and shifts 0 (PyTorch's defaults are scaled
    for classifiers and start the generator as high-frequency noise). Draws from the
    global RNG, which the loop has seeded."""
    for module in gan.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def _mode_seeking(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN's term (Mao et al., 2019): 1 / (mean L1 distance between two images over that
    between their latents), the batch's first half paired with its second; minimising it
    makes different latents draw different pictures (against mode collapse)."""
    half = len(fake) // 2
    images = (fake[:half] - fake[half:2 * half]).abs().mean((1, 2, 3))
    latents = (z[:half] - z[half:2 * half]).abs().mean((1, 2, 3))
    return 1.0 / ((images / latents).mean() + 1e-5)


def _bce(p: torch.Tensor, target: float) -> torch.Tensor:
    # Probabilities from NetD's sigmoid: BCE in float32 outside autocast (not autocast-safe).
    with torch.autocast(device_type=p.device.type, enabled=False):
        p = p.float()
        return functional.binary_cross_entropy(p, torch.full_like(p, target))


@register_trainer("generate")
class GenerateTrainer(Trainer):
    # train_step calls the two nets directly: each gets its own DDP (D's gradients of a G
    # step are averaged too, and zeroed before D's next step).
    ddp_modules = ("netg", "netd")
    trivial_predictor = "an untrained generator of the same architecture"
    hp: GenerateHyperparameters
    model: DCGAN

    def setup(self) -> None:
        hp, base = self.hp, self.ctx.base_module
        if base is not None:
            if base.nz != hp.nz:
                raise ValueError(f"base model has nz={base.nz}, hyper-parameters ask {hp.nz}")
            self.model = cast(DCGAN, copy.deepcopy(base)).to(self.device)
        else:
            self.model = cast(DCGAN, create_model(self.ctx.arch, nz=hp.nz, ngf=hp.ngf,
                                                  ndf=hp.ndf)).to(self.device)
            _dcgan_init(self.model)
        betas = (hp.beta1, hp.beta2)
        self.optimizers["g"] = torch.optim.Adam(self.model.netg.parameters(), hp.lr_g,
                                                betas=betas)
        self.optimizers["d"] = torch.optim.Adam(self.model.netd.parameters(), hp.lr_d,
                                                betas=betas)
        for k, opt in self.optimizers.items():
            self.schedulers[k] = torch.optim.lr_scheduler.StepLR(opt, hp.lr_halve_every, 0.5)
        self.train_set = Images(_paths(self.splits.train), _Transform())
        self.val_loader = self.eval_loader(self.splits.val)
        # Fixed noise (from the seed, not the global RNG) so the grids show one evolution.
        self.fixed_noise = _noise(hp.num_samples, hp.nz, hp.seed + 7).to(self.device)

    def train_step(self, batch: Any) -> dict[str, float]:
        real, hp, netg, netd = batch, self.hp, self.model.netg, self.model.netd
        n = len(real)
        # Noise from the global CPU RNG: restored with the checkpoint, so resume is exact.
        z = torch.randn(n, hp.nz, 1, 1).to(self.device)
        step = self.global_step
        out: dict[str, float] = {}
        if step % hp.d_every == 0:
            with self.autocast():
                fake = netg(z).detach()
                d_real, d_fake = netd(real), netd(fake)
            loss_d = _bce(d_real, 1.0) + _bce(d_fake, 0.0)
            self.optimize(loss_d, "d")
            out.update(loss_d=loss_d.item(), d_real=d_real.float().mean().item(),
                       d_fake=d_fake.float().mean().item())
        if step % hp.g_every == 0:
            with self.autocast():
                fake = netg(z)
                scores = netd(fake)
            loss_g = _bce(scores, 1.0)
            if hp.mode_seeking > 0 and n >= 2:
                seeking = _mode_seeking(fake.float(), z)
                loss_g = loss_g + hp.mode_seeking * seeking
                out["mode_seeking"] = seeking.item()
            self.optimize(loss_g, "g")
            out["loss_g"] = loss_g.item()
        return out

    def recalibrate(self) -> None:
        # Seeded per epoch: a resumed run replays the same noise.
        self._bn_noise = torch.Generator().manual_seed(self.hp.seed * 1_000_003 + 13 + self.epoch)
        super().recalibrate()

    def bn_forward(self, module: nn.Module, batch: Any) -> Any:
        # D sees real images and G's samples (as in training); G sees noise. The noise comes
        # from a private generator, so the re-estimation draws nothing from the global RNG.
        gan = cast(DCGAN, module)
        z = torch.randn(len(batch), gan.nz, 1, 1, generator=self._bn_noise).to(batch.device)
        gan.netd(batch)
        return gan.netd(gan.netg(z))

    @classmethod
    def eval_dataset(cls, samples: Samples, hp: Any,
                     labels: list[str] | None) -> Dataset[Any]:
        return Images(_paths(samples), _Transform())

    @classmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: Any, labels: list[str] | None) -> dict[str, float]:
        gan = cast(DCGAN, module)
        d_real, reals = Mean(), []
        for real in loader:
            real = real.to(device)
            d_real.add(gan.netd(real).float().mean(), len(real))
            reals.append(real.float().cpu())
        z = _noise(max(16, hp.num_samples), gan.nz, hp.seed + 11).to(device)
        fake = gan.netg(z).float()
        d_fake = float(gan.netd(fake).float().mean())
        real_all = torch.cat(reals)
        # The gate's latents and 8-bit rounding, on the PyTorch net (the gate itself scores
        # the exported graph: served_metrics).
        drawn = gan_gate.to_served(
            gan.netg(torch.from_numpy(gan_gate.latents(gan.nz)).to(device)).float().cpu(), -1, 1)
        quality = gan_gate.sample_quality((real_all + 1) / 2, drawn)
        return {"kid": quality["kid"], "diversity_ratio": quality["diversity_ratio"],
                "d_real": d_real.value(), "d_fake": d_fake,
                "d_gap": d_real.value() - d_fake,
                "diversity": mean_pairwise_l2(fake.cpu()),
                "moment_distance": moment_distance(fake.cpu(), real_all)}

    @classmethod
    def trivial_metrics(cls, splits: Any, loader: DataLoader[Any], hp: Any,
                        labels: list[str] | None) -> dict[str, float] | None:
        # Seeded apart from the global RNG: the bar is the same on every run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp.seed + 5)
            netg = cast(DCGAN, create_model("dcgan", nz=hp.nz, ngf=hp.ngf, ndf=hp.ndf)).netg
        drawn = gan_gate.untrained_samples(netg, hp.nz, (-1.0, 1.0))
        return gan_gate.sample_quality(_real(loader), drawn)

    @classmethod
    def served_metrics(cls, version_file: Callable[[str], Path], preprocessing: dict[str, Any],
                       module: nn.Module, data: DatasetSource, hp: Any,
                       labels: list[str] | None) -> dict[str, float]:
        low, high = preprocessing["output_range"]
        drawn = gan_gate.onnx_samples(version_file(cls.spec.graphs["main"].file),
                                      int(preprocessing["nz"]), (float(low), float(high)))
        _, loader, _ = cls._loader_for(data, hp, labels, "val")
        return gan_gate.sample_quality(_real(loader), drawn)

    @classmethod
    def gate_check(cls, metrics: dict[str, float]) -> tuple[bool, str]:
        return gan_gate.diversity_check(metrics)

    def arch_kwargs(self) -> dict[str, Any]:
        # Read back from the layers: a fine-tuned base keeps its own widths.
        return {"nz": int(self.model.nz),
                "ngf": int(cast(nn.ConvTranspose2d, self.model.netg.main[0]).out_channels) // 8,
                "ndf": int(cast(nn.Conv2d, self.model.netd.main[0]).out_channels)}

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        self.model.eval()
        with torch.no_grad():
            imgs = ((self.model.netg(self.fixed_noise).float().cpu() + 1) / 2).clamp(0, 1)
        ncol = max(1, int(len(imgs) ** 0.5))
        rows = [list(imgs[i:i + ncol]) for i in range(0, len(imgs), ncol)]
        return [augment.save_grid(rows, folder / f"generate_epoch_{epoch:03d}.png")]

