"""The cartoonize starter's data: crops of real photos and their cartoons by a classical
filter, so the starter's output looks like a cartoon of a photo, not of a drawn scene.

The photos are the four real pictures the worker package ships for INT8 calibration
(worker/training/calibration/: scikit-image's astronaut, chelsea the cat, coffee and
rocket; licences in its README). The target of each crop is a "toon filter": edge-preserving
smoothing (an iterated bilateral filter: flattens texture, keeps the borders between
regions), colour quantisation (8 colours by median cut: flat areas of paint) and dark
outlines where the smoothed picture has strong edges. It is a function of the photo a
network can learn, and a person recognises the result as a cartoon of it.

Torch-free (Pillow + numpy), like the other dataset makers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# Package data of the worker, read as files (this module imports nothing of the worker).
PHOTOS_DIR = Path(__file__).resolve().parents[1] / "worker" / "training" / "calibration"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
COLOURS = 8
INK = (25, 20, 20)


def _bilateral(rgb: np.ndarray, radius: int = 2, sigma_space: float = 2.0,
               sigma_colour: float = 0.12) -> np.ndarray:
    """One bilateral filter pass over an H x W x 3 image in [0, 1]."""
    h, w, _ = rgb.shape
    pad = np.pad(rgb, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    total = np.zeros_like(rgb)
    weights = np.zeros((h, w, 1), dtype=rgb.dtype)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = pad[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
            colour = ((shifted - rgb) ** 2).sum(2, keepdims=True)
            weight = np.exp(-(dx * dx + dy * dy) / (2 * sigma_space ** 2)
                            - colour / (2 * sigma_colour ** 2))
            total += weight * shifted
            weights += weight
    return total / weights


def cartoon_filter(photo: Image.Image, colours: int = COLOURS, passes: int = 3) -> Image.Image:
    """Bilateral smoothing, median-cut colour quantisation and dark outlines."""
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0
    for _ in range(passes):
        rgb = _bilateral(rgb)
    smooth = Image.fromarray((rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
    flat = smooth.quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                           dither=Image.Dither.NONE).convert("RGB")
    grey = np.asarray(smooth.convert("L"), dtype=np.float32)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy)
    # Outlines at the strongest 10% of the gradients (and at least a clear step),
    # thickened on large pictures so they read as ink.
    threshold = max(float(np.quantile(edges, 0.90)), 16.0)
    ink = Image.fromarray(((edges > threshold) * 255).astype(np.uint8))
    ink = ink.filter(ImageFilter.MaxFilter(3)) if min(photo.size) >= 256 else ink
    out = np.asarray(flat).copy()
    out[np.asarray(ink) > 0] = INK
    return Image.fromarray(out)


def _photos() -> list[Image.Image]:
    missing = [name for name in PHOTOS if not (PHOTOS_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the starter photos {missing} are not in {PHOTOS_DIR}")
    return [Image.open(PHOTOS_DIR / name).convert("RGB") for name in PHOTOS]


def make_photo_cartoons(root: Path, n: int = 32, size: int = 64, seed: int = 0,
                        n_val: int = 0) -> Path:
    """``train/photo`` + ``train/cartoon`` (and ``val/...`` when ``n_val``): random square
    crops (a third to all of the short side, mirrored half the time) of the photos, the
    photos in turn, resized to ``size``, each with its cartoon."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    for split, count in (("train", n), ("val", n_val)):
        for kind in ("photo", "cartoon"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            photo = photos[i % len(photos)]
            short = min(photo.size)
            side = int(rng.integers(short // 3, short + 1))
            x = int(rng.integers(0, photo.width - side + 1))
            y = int(rng.integers(0, photo.height - side + 1))
            crop = photo.crop((x, y, x + side, y + side))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            # Filtered at (up to) twice the output size, then downscaled: thin, clean ink.
            work = crop.resize((2 * size, 2 * size), Image.Resampling.LANCZOS)
            cartoon = cartoon_filter(work).resize((size, size), Image.Resampling.LANCZOS)
            crop.resize((size, size), Image.Resampling.LANCZOS).save(
                root / split / "photo" / f"{i:04d}.png")
            cartoon.save(root / split / "cartoon" / f"{i:04d}.png")
    return root
