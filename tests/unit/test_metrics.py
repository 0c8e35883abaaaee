"""The library-backed metrics give the numbers our manifests have always recorded.

Each is compared, on random fixtures, with a straight re-implementation of the protocol
(the code the project used before it took the measures from torchmetrics).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from worker.training.losses import ssim
from worker.training.metrics import SaliencyMetrics, confusion_matrix, psnr


def _reference_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Gaussian-window SSIM (11 taps, sigma 1.5) averaged over valid positions, per image."""
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    c = x.shape[1]
    win = (g[:, None] * g[None, :]).expand(c, 1, 11, 11).contiguous()

    def filt(t: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(t, win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def _reference_saliency(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    pred, gt = pred.flatten(1), gt.flatten(1) > 0.5
    th = torch.linspace(0, 1, 256).view(1, -1, 1)
    positive = pred[:, None, :] >= th
    tp = (positive & gt[:, None, :]).sum(-1).double()
    p = (tp / positive.sum(-1).clamp_min(1)).mean(0)
    r = (tp / gt.sum(-1, keepdim=True).clamp_min(1)).mean(0)
    f = 1.3 * p * r / (0.3 * p + r).clamp_min(1e-12)
    return {"mae": float((pred - gt.float()).abs().mean()), "max_fbeta": float(f.max())}


@pytest.mark.parametrize("shape", [(1, 3, 40, 48), (3, 3, 64, 64), (4, 1, 16, 20)])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_equals_the_valid_window_protocol(shape, data_range):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(*shape, generator=g) * data_range
    y = (x + 0.2 * data_range * torch.randn(*shape, generator=g)).clamp(0, data_range)
    ref = _reference_ssim(x, y, data_range)
    assert torch.allclose(ssim(x, y, data_range, reduction="none"), ref, atol=1e-6)
    assert float(ssim(x, y, data_range)) == pytest.approx(float(ref.mean()), abs=1e-6)


def test_ssim_matches_skimage_and_is_a_loss():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=g, requires_grad=True)
    y = (x.detach() + 0.2 * torch.randn(1, 3, 40, 48, generator=g)).clamp(0, 1)
    ref = structural_similarity(x[0].detach().numpy(), y[0].numpy(), channel_axis=0,
                                data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    value = ssim(x, y)
    assert float(value.detach()) == pytest.approx(ref, abs=1e-5)
    (1 - value).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_ssim_of_an_image_smaller_than_the_window():
    # The old code shrank the 11-tap window and kept sigma 1.5; now the Gaussian narrows to
    # fit. Only the value for images under 11 px differs; identical images still score 1.
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 6, 7, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 6, 7, generator=g)).clamp(0, 1)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert 0.2 < float(ssim(x, y)) < 0.95


def test_psnr_per_image():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=g)
    y = (x + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
    mse = (x - y).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(x, y), 10 * torch.log10(1 / mse), atol=1e-4)
    assert torch.allclose(psnr(x * 2 - 1, y * 2 - 1, 2.0), psnr(x, y), atol=1e-4)
    assert math.isinf(float(psnr(x, x)[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saliency_metrics_equal_the_sod_protocol(seed):
    g = torch.Generator().manual_seed(seed)
    gt = (torch.rand(4, 1, 24, 24, generator=g) > 0.6).float()
    pred = (0.6 * gt + 0.5 * torch.rand(4, 1, 24, 24, generator=g)).clamp(0, 1)
    pred[0] = 0  # an all-background prediction: precision 0 by convention, not NaN
    metrics = SaliencyMetrics()
    metrics.add(pred[:2], gt[:2])
    metrics.add(pred[2:], gt[2:])
    ref = _reference_saliency(pred, gt)
    got = metrics.compute()
    assert got["mae"] == pytest.approx(ref["mae"], abs=1e-6)
    assert got["max_fbeta"] == pytest.approx(ref["max_fbeta"], abs=1e-6)


def test_confusion_matrix_rows_are_the_true_class():
    true = torch.tensor([0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 2, 1, 2, 0, 2])
    cm = confusion_matrix(true, pred, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 2]]
