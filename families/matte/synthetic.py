"""matte's synthetic images: one solid, saturated object on a muted noisy gradient, and its
mask.

The object fills a third to two thirds of the picture's side and its colour is saturated
(one channel high, one low) while the background's channels all stay mid-grey-ish, so colour
alone tells foreground from background: a from-scratch U-2-Net learns it in the few dozen
steps of a starter (with dull colours on either side it could not beat an all-background
mask in that budget). Shapes, positions and colours vary with the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tasks.synthetic import CLASS_SHAPES, box, noisy, shape


def _muted(rng: np.random.Generator, size: int) -> Image.Image:
    """A two-colour linear gradient of dull colours (every channel in [90, 170))."""
    a, b = rng.integers(90, 170, 3), rng.integers(90, 170, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    grad = np.broadcast_to(a * (1 - t) + b * t, (size, size, 3))
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)
    return Image.fromarray(np.ascontiguousarray(grad).astype(np.uint8))


def _saturated(rng: np.random.Generator) -> tuple[int, int, int]:
    """A vivid colour: one channel in [215, 256), another in [0, 45), the third anywhere."""
    channels = [int(rng.integers(215, 256)), int(rng.integers(0, 45)), int(rng.integers(0, 256))]
    order = rng.permutation(3)
    r, g, b = (channels[i] for i in order)
    return r, g, b


def make_matte(root: Path, n: int = 24, size: int = 64, seed: int = 0, n_val: int = 0) -> Path:
    """``images/*.jpg`` + ``masks/*.png`` (and ``val/...`` when ``n_val``): one saturated
    object on a muted noisy gradient."""
    rng = np.random.default_rng(seed)
    for folder, count in ((root, n), (root / "val", n_val)):
        for i in range(count):
            img = _muted(rng, size)
            mask = Image.new("L", (size, size), 0)
            kind, where = str(rng.choice(CLASS_SHAPES[:4])), box(rng, size, 0.35, 0.7)
            shape(ImageDraw.Draw(img), kind, where, _saturated(rng))
            shape(ImageDraw.Draw(mask), kind, where, 255)
            img = noisy(img, rng, 10.0)
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            img.save(folder / "images" / f"{i:04d}.jpg", quality=95)
            mask.save(folder / "masks" / f"{i:04d}.png")
    return root
