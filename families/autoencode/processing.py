"""autoencode pre- and post-processing: numpy and Pillow only.

Every parameter comes from the version's serving config (``AutoencodeServing``); the API
and INT8 calibration both call ``autoencode_input``, so they feed the graph alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tasks.arrays import chw, scale_pixels

if TYPE_CHECKING:
    from families.autoencode.spec import AutoencodeServing


def autoencode_input(image: Image.Image, config: AutoencodeServing) -> np.ndarray:
    """Centre-crop square, resize to size x size, values in ``input_range``."""
    size = config.size
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    square = square.resize((size, size), Image.Resampling.BILINEAR)
    return chw(scale_pixels(np.asarray(square, np.float32), config.input_range))


def upscale(image: Image.Image, size: int | None) -> Image.Image:
    if size is None or size == image.width:
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` points on the segment from a to b, both ends included: steps,L."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return np.asarray((1.0 - t) * a.reshape(1, -1) + t * b.reshape(1, -1), dtype=np.float32)


def fitted_latents(
    rng: np.random.Generator, n: int, mean: np.ndarray, cholesky: np.ndarray
) -> np.ndarray:
    """n samples of N(mean, L L^T): mean + L @ eps."""
    eps = rng.standard_normal((n, mean.shape[0])).astype(np.float32)
    return np.asarray(mean[None, :] + eps @ cholesky.T, dtype=np.float32)


@dataclass
class LatentStats:
    """The fitted latent distribution a version carries (``latent_stats.npz``)."""

    mean: np.ndarray  # [L]
    cholesky: np.ndarray  # [L, L]


def read_latent_stats(arrays: Mapping[str, Any]) -> LatentStats:
    """The published arrays as a ``LatentStats``; ValueError when they do not fit."""
    mean = np.asarray(arrays["mean"], np.float32).reshape(-1)
    cholesky = np.asarray(arrays["cholesky"], np.float32)
    if cholesky.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"has mean {mean.shape} but cholesky {cholesky.shape}")
    return LatentStats(mean, cholesky)


def fit_latent_distribution(latents: np.ndarray) -> dict[str, np.ndarray]:
    """A full-covariance Gaussian over encoded training images, for /autoencode/sample."""
    latents = np.asarray(latents, dtype=np.float64)
    mean = latents.mean(axis=0)
    cov = np.cov(latents, rowvar=False) if len(latents) > 1 else np.eye(latents.shape[1])
    # A small ridge keeps the Cholesky factor defined when there are fewer images than dims.
    cov = np.atleast_2d(cov) + 1e-4 * np.eye(latents.shape[1])
    return {
        "mean": mean.astype(np.float32),
        "cholesky": np.linalg.cholesky(cov).astype(np.float32),
    }


def main_inputs(image: Image.Image, config: AutoencodeServing) -> dict[str, np.ndarray]:
    """The main graph's inputs for one upload."""
    return {"image": autoencode_input(image, config)}
