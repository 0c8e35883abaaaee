"""Starter data for the portrait family: photos and a fixed pencil filter's drawings.

``pencil`` is a colour-dodge sketch (dark lines on white paper, like APDrawingGAN's
drawings): the grey image divided by its blurred negative. Any photos can be made into
pairs with it (the tests use real ones); ``make_portrait`` draws procedural heads so the
starter job needs no files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_DODGE_BLUR = 4.0  # pixels; wider gives thicker, softer lines


def pencil(photo: Image.Image) -> Image.Image:
    """A fixed pencil-sketch filter: 8-bit L, white where the photo is flat."""
    grey = photo.convert("L")
    negative_blur = Image.eval(grey, lambda v: 255 - v).filter(
        ImageFilter.GaussianBlur(_DODGE_BLUR))
    g = np.asarray(grey, np.float32)
    b = np.asarray(negative_blur, np.float32)
    sketch = np.clip(g * 255.0 / np.maximum(255.0 - b, 1.0), 0, 255)
    return Image.fromarray(np.rint(sketch).astype(np.uint8), mode="L")


def _head(rng: np.random.Generator, size: int) -> Image.Image:
    low, high = rng.integers(90, 200, 3), rng.integers(150, 256, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    pixels = (low + (high - low) * ramp) * np.ones((size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.45, 0.55)
    rx, ry = size * rng.uniform(0.2, 0.28), size * rng.uniform(0.28, 0.36)
    skin = tuple(int(v) for v in rng.integers(150, 240, 3))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    dark = tuple(int(v) for v in rng.integers(10, 70, 3))
    draw.pieslice((cx - rx, cy - ry * 1.1, cx + rx, cy + ry * 0.4), 180, 360, fill=dark)  # hair
    for side in (-1, 1):
        ex = cx + side * rx * 0.4
        draw.ellipse((ex - rx * 0.12, cy - ry * 0.08, ex + rx * 0.12, cy + ry * 0.04), fill=dark)
    draw.line((cx - rx * 0.35, cy + ry * 0.5, cx + rx * 0.35, cy + ry * 0.5), fill=dark,
              width=max(size // 48, 1))
    return image


def make_portrait(root: Path, n: int = 16, size: int = 96, seed: int = 0,
                  n_val: int = 0) -> Path:
    """``photo/*.png`` + ``drawing/*.png`` (and ``val/...`` when ``n_val``)."""
    rng = np.random.default_rng(seed)
    for folder, count in ((root, n), (root / "val", n_val)):
        for i in range(count):
            photo = _head(rng, size)
            for sub, image in (("photo", photo), ("drawing", pencil(photo))):
                (folder / sub).mkdir(parents=True, exist_ok=True)
                image.save(folder / sub / f"{i:04d}.png")
    return root
