"""classify (GoogLeNet) pre- and post-processing: numpy and Pillow only.

Every parameter comes from the version's serving config (``ClassifyServing``); the API and
INT8 calibration both call ``classify_input``, so they feed the graph alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tasks.arrays import normalised_chw

if TYPE_CHECKING:
    from families.classify.spec import ClassifyServing


def classify_input(image: Image.Image, config: ClassifyServing) -> np.ndarray:
    """torchvision's Resize(shorter) + CenterCrop(crop) + ToTensor + Normalize.

    Only the crop is ever resized: the centre-crop box is mapped back into the source image
    and Pillow resamples that box straight to crop x crop: the same sample positions and
    filter support as resizing the whole image first (values agree to one 8-bit level;
    Pillow rounds between its two passes). Resizing the whole image first made a 1x10000
    image a 256x2560000 one, 3.1 GB of RSS for a 125-byte upload.
    """
    resize_shorter, crop = config.resize_shorter, config.crop
    width, height = image.size
    if width <= height:
        new_size = (resize_shorter, int(resize_shorter * height / width))
    else:
        new_size = (int(resize_shorter * width / height), resize_shorter)
    left = int(round((new_size[0] - crop) / 2.0))
    top = int(round((new_size[1] - crop) / 2.0))
    # The crop window in resized coordinates, clipped to the resized image (CenterCrop pads
    # with black where the crop is larger than the image).
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + crop, new_size[0]), min(top + crop, new_size[1])
    sx, sy = width / new_size[0], height / new_size[1]
    patch = image.resize((max(1, x1 - x0), max(1, y1 - y0)), Image.Resampling.BILINEAR,
                         box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    if patch.size != (crop, crop):
        canvas = Image.new(image.mode, (crop, crop))
        canvas.paste(patch, (x0 - left, y0 - top))
        patch = canvas
    return normalised_chw(np.asarray(patch), 255.0, config.mean, config.std)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum())


def top_k(logits: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k most probable labels, best first (ties keep label order)."""
    probs = softmax(np.ravel(logits))
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order]


def label_names(labels: Sequence[str] | None, count: int) -> list[str]:
    if labels and len(labels) == count:
        return list(labels)
    return [f"class_{i}" for i in range(count)]


def main_inputs(image: Image.Image, config: ClassifyServing) -> dict[str, np.ndarray]:
    """The main graph's inputs for one upload."""
    return {"image": classify_input(image, config)}
