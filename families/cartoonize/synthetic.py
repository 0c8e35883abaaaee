"""cartoonize's synthetic pairs: noisy photos of drawn scenes and their inked, posterised
cartoons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from tasks.synthetic import noisy, scene


def cartoonize_target(clean: Image.Image) -> Image.Image:
    """The "cartoon" of a clean scene: 3-bit posterised colours with dark inked edges."""
    flat = ImageOps.posterize(clean.filter(ImageFilter.SMOOTH_MORE), 3)
    edges = np.asarray(clean.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    ink = (edges > 40)[:, :, None]
    out = np.where(ink, 20, np.asarray(flat)).astype(np.uint8)
    return Image.fromarray(out)


def make_cartoonize(root: Path, n: int = 24, size: int = 64, seed: int = 0,
                    n_val: int = 0) -> Path:
    """``train/photo`` + ``train/cartoon`` (and ``val/...`` when ``n_val``)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", n_val)):
        for i in range(count):
            clean = scene(rng, size)
            photo = noisy(clean.filter(ImageFilter.GaussianBlur(0.6)), rng, 6.0)
            for kind, img in (("photo", photo), ("cartoon", cartoonize_target(clean))):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                img.save(root / split / kind / f"{i:04d}.png")
    return root
