"""Losses shared by the trainers: SSIM (Gaussian window, Wang et al. 2004) and U-2-Net's
multi-side-output BCE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).to(device=like.device, dtype=like.dtype)
    return win.expand(channels, 1, size, size).contiguous()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM of NCHW batches, averaged over the valid (unpadded) window positions and channels.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)``. ``reduction="none"`` gives one value per
    image. Windows larger than the image shrink to the image's smaller side (odd).
    """
    x, y = x.float(), y.float()
    window = min(window, x.shape[-1], x.shape[-2])
    window -= 1 - window % 2
    c = x.shape[1]
    win = _gaussian_window(window, sigma, c, x)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(t, win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    s_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    )
    per_image = s_map.flatten(1).mean(1)
    return per_image if reduction == "none" else per_image.mean()


def multi_bce(side_outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """U-2-Net's training loss: the sum of BCE over the fused map d0 and the six side maps.

    The maps are already sigmoids; BCE on probabilities is not autocast-safe, so it runs in
    float32 outside autocast.
    """
    with torch.autocast(device_type=target.device.type, enabled=False):
        t = target.float()
        return sum(functional.binary_cross_entropy(d.float(), t) for d in side_outputs)  # type: ignore[return-value]
