"""Is a generator worth serving? Sample quality and diversity against held-out images.

A GAN has no validation loss that says one version is better, so its gate measures what
people look at: the samples. Both numbers are computed on features of a fixed network:

- ``kid``: the kernel inception distance (the unbiased squared MMD with the cubic
  polynomial kernel of Bińkowski et al., 2018) between generated samples and held-out
  training images. Unbiased, so it is meaningful with the few dozen images of a small
  validation split, where the Fréchet distance is dominated by its small-sample bias.
- ``diversity_ratio``: the mean pairwise feature distance of the samples over that of the
  real images. A collapsed generator (every latent gives about the same picture) scores
  near 0 however good its one picture is.

The feature network is a randomly initialised conv net with a fixed seed (:func:`feature_net`).
The install has no pretrained image network (no weights can be downloaded), and the
discriminator cannot judge its own generator: it was trained against it, so its features are
exactly the ones the generator learned to fool, and it differs between the two versions
being compared. Random conv features are a fixed, version-independent embedding that still
sees colour, texture and (through the pooled last stage) the layout of a picture, which is
enough to tell an untrained or collapsed generator from one that draws the data; the seed
and widths are part of the metric, so every version is measured with the same net.

The served graph is what is scored: :func:`onnx_samples` runs a version's ``model.onnx``
with onnxruntime and quantises to 8 bits as the API does, so the gate sees the pictures a
user would get. The bar is an untrained generator of the same architecture
(:func:`untrained_samples`), with its BatchNorm statistics estimated as the trainer's would be.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from worker.training.ort_budget import cpu_session

FEATURE_SEED = 20261206
FEATURE_SIZE = 64  # images are resized to this before the feature net
WIDTHS = (32, 64, 128, 256)
# Samples drawn per version: latents from a fixed seed, so every version is scored on the
# same latents and a rerun gives the same numbers.
SAMPLES = 64
SAMPLE_SEED = 1234
# A generator whose samples spread less than this fraction of the real images' spread (in
# feature space) is called collapsed. Judgement: a healthy generator's samples differ about
# as much as the real images do (ratios near 1); partial collapse halves the spread.
MIN_DIVERSITY_RATIO = 0.5


def feature_net() -> nn.Sequential:
    """The fixed feature extractor: four stride-2 conv + ReLU stages, He-initialised from
    ``FEATURE_SEED`` (independent of the global RNG), evaluation only."""
    gen = torch.Generator().manual_seed(FEATURE_SEED)
    layers: list[nn.Module] = []
    cin = 3
    for cout in WIDTHS:
        conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.normal_(0.0, math.sqrt(2.0 / (cin * 16)), generator=gen)
        layers += [conv, nn.ReLU()]
        cin = cout
    net = nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def features(images: torch.Tensor, net: nn.Sequential | None = None) -> torch.Tensor:
    """N x D features of NCHW RGB images in [0, 1]: the global mean of every stage (colour
    and texture at four scales) and the last stage pooled to 2x2 (the layout)."""
    net = net or feature_net()
    x = functional.interpolate(images.float(), size=(FEATURE_SIZE, FEATURE_SIZE),
                               mode="bilinear", align_corners=False, antialias=True)
    x = x * 2.0 - 1.0
    parts = []
    with torch.no_grad():
        for layer in net:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                parts.append(x.mean((2, 3)))
        parts.append(functional.adaptive_avg_pool2d(x, 2).flatten(1))
    return torch.cat(parts, 1).double()


def _standardise(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Centred on the real images and scaled by one scalar (their mean per-dimension spread),
    # so the polynomial kernel's x.y/d is of order 1 whatever the raw feature scale.
    mean = real.mean(0, keepdim=True)
    scale = (real - mean).pow(2).mean().sqrt().clamp_min(1e-12)
    return (real - mean) / scale, (fake - mean) / scale


def kid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased squared MMD, kernel k(x, y) = (x.y / d + 1)^3, of two feature sets (rows)."""
    x, y = _standardise(real, fake)
    d, m, n = x.shape[1], len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("KID needs at least two real and two generated images")
    kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def spread(feats: torch.Tensor) -> float:
    """Mean L2 distance between distinct pairs of feature rows (0: all the same)."""
    n = len(feats)
    if n < 2:
        return 0.0
    return float(torch.cdist(feats, feats).sum() / (n * (n - 1)))


def sample_quality(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """``kid`` and ``diversity_ratio`` (with the two spreads) of generated images ``fake``
    against held-out ``real`` ones; both NCHW in [0, 1]."""
    net = feature_net()
    fr, ff = features(real, net), features(fake, net)
    real_spread, fake_spread = spread(fr), spread(ff)
    return {"kid": kid(fr, ff), "diversity_ratio": fake_spread / max(real_spread, 1e-12),
            "diversity": fake_spread, "real_diversity": real_spread}


def diversity_check(metrics: dict[str, float]) -> tuple[bool, str]:
    """Are the samples diverse enough (not collapsed), and the number in words."""
    ratio = float(metrics["diversity_ratio"])
    text = (f"diversity_ratio={ratio:.3g} (the samples' mean pairwise feature distance over"
            f" the held-out images'; at least {MIN_DIVERSITY_RATIO:g} required)")
    if ratio >= MIN_DIVERSITY_RATIO:
        return True, text
    return False, f"its samples are collapsed: {text}"


def latents(nz: int, n: int = SAMPLES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The gate's fixed latents, N x nz x 1 x 1 standard normal (float32)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, nz, 1, 1), dtype=np.float32)


def to_served(images: np.ndarray | torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Generator output in [low, high] -> [0, 1], rounded to 8 bits as the API encodes it."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    x = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return torch.round(x * 255.0) / 255.0


def onnx_samples(graph: Path, nz: int, output_range: tuple[float, float],
                 n: int = SAMPLES) -> torch.Tensor:
    """What the served graph draws from the gate's latents (its first output, the images)."""

    session = cpu_session(graph)
    name = session.get_inputs()[0].name
    out = session.run(None, {name: latents(nz, n)})[0]
    return to_served(out, *output_range)


def untrained_samples(generator: nn.Module, nz: int, output_range: tuple[float, float],
                      n: int = SAMPLES, bn_batches: int = 4) -> torch.Tensor:
    """Samples of a freshly initialised ``generator`` (the caller seeds its init), with its
    BatchNorm statistics estimated on noise batches first, as training re-estimates them
    before every validation; evaluation mode, the gate's latents."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED + 1)
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for _ in range(bn_batches):
            generator(torch.randn(n, nz, 1, 1, generator=gen))
        generator.eval()
        out = generator(torch.from_numpy(latents(nz, n)))
    return to_served(out, *output_range)
