"""matte (U-2-Net) pre- and post-processing: numpy and Pillow only.

Every parameter comes from the version's serving config (``MatteServing``); the API and
INT8 calibration both call ``matte_input``, so they feed the graph alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tasks.arrays import normalised_chw, to_uint8

if TYPE_CHECKING:
    from families.matte.spec import MatteServing


def matte_input(image: Image.Image, config: MatteServing) -> np.ndarray:
    """U-2-Net test preprocessing: resize to size x size, divide by the max, mean/std."""
    size = config.size
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    peak = float(pixels.max()) if config.divide_by_max else 255.0
    return normalised_chw(pixels, peak, config.mean, config.std)


def matte_mask(prediction: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """d0 -> min-max normalised, resized (bilinear) to ``size``, as an 8-bit L image."""
    pred = np.asarray(prediction, np.float32).reshape(prediction.shape[-2:])
    low, high = float(pred.min()), float(pred.max())
    pred = (pred - low) / (high - low) if high > low else np.zeros_like(pred)
    mask = Image.fromarray(pred, mode="F").resize(size, Image.Resampling.BILINEAR)
    return Image.fromarray(to_uint8(np.asarray(mask), 0.0, 1.0), mode="L")


def cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    rgba.putalpha(mask)
    return rgba


def composite(image: Image.Image, mask: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    background = Image.new("RGB", image.size, colour)
    return Image.composite(image, background, mask)


def parse_colour(text: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b); ValueError otherwise."""
    if len(text) != 7 or text[0] != "#":
        raise ValueError("expected #rrggbb")
    value = int(text[1:], 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def main_inputs(image: Image.Image, config: MatteServing) -> dict[str, np.ndarray]:
    """The main graph's inputs for one upload."""
    return {"image": matte_input(image, config)}
