"""cartoonize (DCT-Net) pre- and post-processing: numpy and Pillow only.

Every parameter comes from the version's serving config (``CartoonizeServing``); the API
and INT8 calibration both call ``cartoon_input``, so they feed the graph alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tasks.arrays import chw, chw_to_image, scale_pixels

if TYPE_CHECKING:
    from families.cartoonize.spec import CartoonizeServing


def cartoon_graph_size(
    size: tuple[int, int], max_side: int, multiple_of: int
) -> tuple[int, int]:
    """The (W, H) the graph sees: long side capped at max_side, both rounded down."""
    scale = min(1.0, max_side / max(size))
    width, height = size[0] * scale, size[1] * scale
    # Round down to the multiple, but never below one multiple (tiny images upscale a bit).
    return (
        max(multiple_of, int(width) // multiple_of * multiple_of),
        max(multiple_of, int(height) // multiple_of * multiple_of),
    )


def cartoon_input(image: Image.Image, config: CartoonizeServing,
                  max_side: int | None = None) -> np.ndarray:
    """RGB image -> 1,3,H,W in ``input_range`` (BGR for DCT-Net) at the graph size; the long
    side is capped at ``max_side`` (the config's when None)."""
    side = config.max_side if max_side is None else max_side
    graph_size = cartoon_graph_size(image.size, side, config.multiple_of)
    if graph_size != image.size:
        image = image.resize(graph_size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32)
    if config.color_order == "BGR":
        pixels = pixels[..., ::-1]
    return chw(scale_pixels(pixels, config.input_range))


def cartoon_output(cartoon: np.ndarray, size: tuple[int, int],
                   config: CartoonizeServing) -> Image.Image:
    """1,3,H,W (or 3,H,W) in ``output_range`` -> RGB image resized back to ``size``."""
    low, high = config.output_range
    image = chw_to_image(cartoon.reshape(cartoon.shape[-3:]), low, high,
                         bgr=config.color_order == "BGR")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def main_inputs(image: Image.Image, config: CartoonizeServing) -> dict[str, np.ndarray]:
    """The main graph's inputs for one upload at the config's long side."""
    return {"image": cartoon_input(image, config)}
