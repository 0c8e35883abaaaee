"""Losses shared by the trainers: SSIM (torchmetrics' Gaussian-window SSIM, Wang et al.
2004) and U-2-Net's multi-side-output BCE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional
from torchmetrics.functional.image import structural_similarity_index_measure

SIGMA = 1.5  # 11-tap window


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = SIGMA,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM of NCHW batches, averaged over the valid (unpadded) window positions and channels.

    torchmetrics computes the SSIM map (Gaussian window of ``sigma``, 11 taps at 1.5); it
    reflect-pads the borders and averages the whole map, whereas the usual protocol
    (``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``, which our manifests have always reported) averages only
    the positions whose window lies inside the image. So we take its map and average the
    valid part, which gives skimage's number. Differentiable: the trainers use ``1 - ssim``
    as a loss term. ``reduction="none"`` gives one value per image. An image smaller than
    the window gets a narrower Gaussian whose window fits it.
    """
    x, y = x.float(), y.float()
    side = min(x.shape[-1], x.shape[-2])
    radius = int(3.5 * sigma + 0.5)  # torchmetrics' (and skimage's) window: 2 * radius + 1
    if 2 * radius + 1 > side:
        radius = max(1, (side - 1) // 2)
        sigma = (radius - 0.5) / 3.5 if radius > 1 else 0.5
    _, full = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=sigma, data_range=data_range, reduction="none",
        return_full_image=True,
    )
    assert isinstance(full, torch.Tensor)
    valid = full[..., radius:-radius, radius:-radius] if radius else full
    per_image = valid.flatten(1).mean(1)
    return per_image if reduction == "none" else per_image.mean()


def multi_bce(side_outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """U-2-Net's training loss: the sum of BCE over the fused map d0 and the six side maps.

    The maps are already sigmoids; BCE on probabilities is not autocast-safe, so it runs in
    float32 outside autocast.
    """
    with torch.autocast(device_type=target.device.type, enabled=False):
        t = target.float()
        return sum(functional.binary_cross_entropy(d.float(), t) for d in side_outputs)  # type: ignore[return-value]
