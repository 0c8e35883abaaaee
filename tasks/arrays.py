"""Pixel and tensor helpers every family's pre- and post-processing shares: numpy and
Pillow only, no sessions, no I/O, so the API, the worker (INT8 calibration) and tests can
all import them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

GRID_PADDING = 2
Range = tuple[float, float]


def chw(array: np.ndarray) -> np.ndarray:
    """HWC -> 1,C,H,W float32 (contiguous, as onnxruntime wants it)."""
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None], dtype=np.float32)


def normalised_chw(pixels: np.ndarray, peak: float, mean: Sequence[float],
                   std: Sequence[float]) -> np.ndarray:
    """8-bit HWC pixels -> 1,C,H,W float32 ``(pixels / peak - mean) / std``, written straight
    into the tensor: one multiply-add per value (``chw(normalise(pixels / peak, ...))`` made
    four full-size float temporaries). Agrees with that to float32 rounding (~1e-6)."""
    peak = peak or 1.0  # an all-black image stays all zeros before the mean
    std32 = np.asarray(std, np.float64)
    scale = (1.0 / (peak * std32)).astype(np.float32)[:, None, None]
    offset = (np.asarray(mean, np.float64) / std32).astype(np.float32)[:, None, None]
    height, width, channels = pixels.shape
    out = np.empty((1, channels, height, width), np.float32)
    np.multiply(pixels.transpose(2, 0, 1), scale, out=out[0])
    np.subtract(out[0], offset, out=out[0])
    return out


def normalise(rgb01: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    return (rgb01 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def scale_pixels(pixels: np.ndarray, value_range: Range) -> np.ndarray:
    """Pixel values in [0, 255] -> [low, high] (float32)."""
    low, high = value_range
    return low + (high - low) * np.asarray(pixels, np.float32) / 255.0


def to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values in [low, high] -> uint8, rounding and clipping outliers."""
    scaled = np.array(array, np.float32)  # our own copy: every step below works in place
    np.subtract(scaled, low, out=scaled)
    np.multiply(scaled, 255.0 / (high - low), out=scaled)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def chw_to_image(array: np.ndarray, low: float, high: float, bgr: bool = False) -> Image.Image:
    """One C,H,W tensor (3 channels) in [low, high] -> an RGB image."""
    hwc = to_uint8(array, low, high).transpose(1, 2, 0)
    if bgr:
        hwc = hwc[..., ::-1]
    return Image.fromarray(np.ascontiguousarray(hwc), mode="RGB")


def images_from_batch(batch: np.ndarray, low: float, high: float) -> list[Image.Image]:
    return [chw_to_image(item, low, high) for item in batch]


def grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Images (equal sizes) in rows, like torchvision's make_grid, on black padding."""
    count = len(images)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    width, height = images[0].size
    canvas = Image.new(
        "RGB",
        (columns * (width + GRID_PADDING) + GRID_PADDING,
         rows * (height + GRID_PADDING) + GRID_PADDING),
    )
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        x = GRID_PADDING + col * (width + GRID_PADDING)
        y = GRID_PADDING + row * (height + GRID_PADDING)
        canvas.paste(image, (x, y))
    return canvas
