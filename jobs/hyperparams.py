"""Per-task fine-tune hyper-parameters, validated by the API before a job is queued.

No torch here: the API process imports this module. Every model forbids unknown fields so a
typo (``learning_rate`` for ``lr``) is a 422 naming the field instead of a silently ignored
setting. Defaults follow the source recipes (see docs / DESIGN.md, "training recipe").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_store.tasks import Task


class CommonHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=1024)
    seed: int = Field(default=0, ge=0, description="seeds init, splits, shuffles, augmentation")
    mixed_precision: bool = Field(
        default=False, description="torch.autocast + GradScaler; used on CUDA only"
    )
    num_workers: int = Field(default=0, ge=0, le=32, description="DataLoader worker processes")


class CartoonizeHyperparameters(CommonHyperparameters):
    """DCT-Net generator fine-tune on photo -> cartoon pairs."""

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    lr: float = Field(default=1e-4, gt=0, le=1)
    lr_step_epochs: int = Field(default=10, ge=1, description="StepLR period (epochs)")
    lr_gamma: float = Field(default=0.9, gt=0, le=1)
    # Number of leading generator convs kept frozen: 0 = none, k = conv0..conv{k-1}.
    # Only the encoder (conv0..conv4) can be frozen.
    freeze_encoder_up_to: int = Field(default=0, ge=0, le=5)
    ssim_weight: float = Field(default=0.5, ge=0)
    image_size: int = Field(default=256, ge=16, le=1024)
    hflip_prob: float = Field(default=0.5, ge=0, le=1)
    color_jitter: float = Field(default=0.1, ge=0, lt=1, description="brightness/contrast/sat")
    scale_range: tuple[float, float] = (0.9, 1.1)
    save_every: int = Field(default=5, ge=1, description="numbered snapshot every N epochs")
    early_stop_patience: int | None = Field(default=5, ge=1, description="None disables")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_4(cls, v: int) -> int:
        # The generator downsamples twice with TF-style stride-2 padding.
        if v % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {v}")
        return v

    @field_validator("scale_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("scale_range must be (low, high) with 0 < low <= high")
        return v


class MatteHyperparameters(CommonHyperparameters):
    """U-2-Net: sum of 7 side-output BCE losses, Adam, resize then random crop."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    resize: int = Field(default=320, ge=16, le=2048)
    crop: int = Field(default=288, ge=16, le=2048)
    hflip_prob: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _crop_fits(self) -> MatteHyperparameters:
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self


class ClassifyHyperparameters(CommonHyperparameters):
    """GoogLeNet fine-tune: new fc, frozen first layers, label smoothing, cosine LR."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(default=1e-4, ge=0)
    # Leading GoogLeNet stages kept frozen (conv1, conv2, conv3, inception3a ... 5b: 12).
    freeze_layers: int = Field(default=0, ge=0, le=12)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    class_balance: Literal["weighted_sampler", "loss_weights", "none"] = "weighted_sampler"
    # Train: resize shorter side to image_size*256/224, random crop, flip; val: centre crop.
    image_size: int = Field(default=224, ge=32, le=1024)


class GenerateHyperparameters(CommonHyperparameters):
    """DCGAN (pytorch-book chapter 7): BCE, Adam(0.5, 0.999), separate G/D learning rates."""

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=2, le=1024)
    lr_g: float = Field(default=2e-4, gt=0, le=1)
    lr_d: float = Field(default=2e-4, gt=0, le=1)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    # The book's G:D ratio: update D on every d_every-th batch, G on every g_every-th batch.
    d_every: int = Field(default=1, ge=1)
    g_every: int = Field(default=1, ge=1)
    lr_halve_every: int = Field(default=20, ge=1, description="halve both LRs every K epochs")
    nz: int = Field(default=100, ge=1, le=1024)
    ngf: int = Field(default=64, ge=4, le=512)
    ndf: int = Field(default=64, ge=4, le=512)
    num_samples: int = Field(default=64, ge=1, le=256, description="fixed-noise grid size")


class AutoencodeHyperparameters(CommonHyperparameters):
    """Convolutional autoencoder: MSE + SSIM loss, cosine LR, early stopping."""

    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    ssim_weight: float = Field(default=0.5, ge=0)
    early_stop_patience: int | None = Field(default=5, ge=1, description="None disables")
    latent_dim: int = Field(default=64, ge=32, le=128)


HYPERPARAMS: dict[Task, type[CommonHyperparameters]] = {
    Task.CARTOONIZE: CartoonizeHyperparameters,
    Task.MATTE: MatteHyperparameters,
    Task.CLASSIFY: ClassifyHyperparameters,
    Task.GENERATE: GenerateHyperparameters,
    Task.AUTOENCODE: AutoencodeHyperparameters,
}


def hyperparams_model(task: Task | str) -> type[CommonHyperparameters]:
    """The pydantic model that validates ``task``'s hyper-parameters (ValueError if unknown)."""
    try:
        return HYPERPARAMS[Task(task)]
    except ValueError:
        raise ValueError(
            f"unknown task {task!r}; known: {', '.join(t.value for t in Task)}"
        ) from None
