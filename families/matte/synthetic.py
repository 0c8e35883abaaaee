"""matte's synthetic images: one solid object on a noisy gradient, and its mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tasks.synthetic import CLASS_SHAPES, background, box, colour, noisy, shape


def make_matte(root: Path, n: int = 24, size: int = 64, seed: int = 0, n_val: int = 0) -> Path:
    """``images/*.jpg`` + ``masks/*.png`` (and ``val/...`` when ``n_val``): one solid object
    on a noisy gradient."""
    rng = np.random.default_rng(seed)
    for folder, count in ((root, n), (root / "val", n_val)):
        for i in range(count):
            img = noisy(background(rng, size), rng, 12.0)
            mask = Image.new("L", (size, size), 0)
            kind, where = str(rng.choice(CLASS_SHAPES[:4])), box(rng, size, 0.35, 0.7)
            shape(ImageDraw.Draw(img), kind, where, colour(rng))
            shape(ImageDraw.Draw(mask), kind, where, 255)
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            img.save(folder / "images" / f"{i:04d}.jpg", quality=95)
            mask.save(folder / "masks" / f"{i:04d}.png")
    return root
