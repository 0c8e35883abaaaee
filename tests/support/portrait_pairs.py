"""Photo/cartoon pairs made from real photos with faces, for compound cartoonize fine-tunes.

The photos are scikit-image's astronaut (training: crops at several offsets and scales,
each with its face inside) and cameraman (held out: another person, another camera); the
"cartoon" is the classical toon filter the cartoonize starter learns (``toon``), so the
target style is known and the same for every photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from families.cartoonize.synthetic import cartoon_filter


def toon(rgb: np.ndarray) -> np.ndarray:
    """The target style of an RGB uint8 photo (same size): the cartoonize starter's
    classical toon filter (bilateral smoothing, median-cut colours, dark outlines)."""
    return np.asarray(cartoon_filter(Image.fromarray(rgb)))


def astronaut_views(side: int) -> list[np.ndarray]:
    """Square views of the astronaut, each holding her face, shrunk to ``side``."""
    photo = data.astronaut()
    views = []
    for x, y, size in ((60, 0, 360), (100, 10, 300), (0, 0, 512), (140, 20, 260),
                       (90, 0, 420), (120, 40, 280)):
        crop = np.ascontiguousarray(photo[y:y + size, x:x + size])
        views.append(np.asarray(Image.fromarray(crop).resize((side, side),
                                                             Image.Resampling.LANCZOS)))
    return views


def cameraman(side: int) -> np.ndarray:
    """The held-out portrait (grey, as RGB), shrunk to ``side``."""
    gray = Image.fromarray(data.camera()).resize((side, side), Image.Resampling.LANCZOS)
    return np.asarray(gray.convert("RGB"))


def write_pairs(root: Path, side: int = 192) -> Path:
    """``train/photo`` + ``train/cartoon`` (astronaut views) and ``val/...`` (cameraman)."""
    splits = {"train": astronaut_views(side), "val": [cameraman(side)]}
    for split, photos in splits.items():
        for i, photo in enumerate(photos):
            for kind, image in (("photo", photo), ("cartoon", toon(photo))):
                folder = root / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root
