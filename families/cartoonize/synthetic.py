"""cartoonize's made-up pairs, of two kinds:

- ``real_photos=0`` (the tests' default): noisy photos of drawn scenes and their inked,
  posterised cartoons. Fast, and enough to show that a model learns.
- ``real_photos=1`` (the starter's): crops of real photos and their cartoons by a classical
  "toon" filter (:func:`cartoon_filter`), so the starter's output looks like a cartoon of a
  photo, not of a drawn scene. The photos are the four scikit-image sample pictures the
  worker ships for INT8 calibration (worker/training/calibration/: the astronaut, chelsea
  the cat, coffee and the rocket; sources and licences in its README), read as files.

The toon filter is a fixed function of the photo that a network can learn and that a person
recognises as a cartoon: edge-preserving smoothing (three passes of a bilateral filter, which
flattens texture and keeps the borders between regions), colour quantisation (8 colours by
median cut: flat areas of paint) and dark outlines where the smoothed picture has its
strongest edges. Torch-free (Pillow + numpy), like the other dataset makers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from tasks.synthetic import noisy, scene

PHOTOS_DIR = Path(__file__).resolve().parents[2] / "worker" / "training" / "calibration"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
COLOURS = 8
INK = (25, 20, 20)


def cartoonize_target(clean: Image.Image) -> Image.Image:
    """The "cartoon" of a clean scene: 3-bit posterised colours with dark inked edges."""
    flat = ImageOps.posterize(clean.filter(ImageFilter.SMOOTH_MORE), 3)
    edges = np.asarray(clean.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    ink = (edges > 40)[:, :, None]
    out = np.where(ink, 20, np.asarray(flat)).astype(np.uint8)
    return Image.fromarray(out)


def _bilateral(rgb: np.ndarray, radius: int = 2, sigma_space: float = 2.0,
               sigma_colour: float = 0.12) -> np.ndarray:
    """One bilateral filter pass over an H x W x 3 float image in [0, 1]: each pixel becomes
    the mean of its neighbours weighted by distance and by colour similarity."""
    h, w, _ = rgb.shape
    pad = np.pad(rgb, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    total = np.zeros_like(rgb)
    weights = np.zeros((h, w, 1), dtype=rgb.dtype)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = pad[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
            colour_d2 = ((shifted - rgb) ** 2).sum(2, keepdims=True)
            weight = np.exp(-(dx * dx + dy * dy) / (2 * sigma_space ** 2)
                            - colour_d2 / (2 * sigma_colour ** 2))
            total += weight * shifted
            weights += weight
    return total / weights


def cartoon_filter(photo: Image.Image, colours: int = COLOURS, passes: int = 3) -> Image.Image:
    """The classical toon filter: bilateral smoothing, median-cut colour quantisation to
    ``colours`` colours, and dark outlines at the strongest edges."""
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0
    for _ in range(passes):
        rgb = _bilateral(rgb)
    smooth = Image.fromarray((rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
    flat = smooth.quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                           dither=Image.Dither.NONE).convert("RGB")
    grey = np.asarray(smooth.convert("L"), dtype=np.float32)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy)
    # Ink at the strongest 10% of the gradients (and only at a clear step), thickened on
    # large pictures so it reads as ink.
    threshold = max(float(np.quantile(edges, 0.90)), 16.0)
    ink = Image.fromarray(((edges > threshold) * 255).astype(np.uint8))
    if min(photo.size) >= 256:
        ink = ink.filter(ImageFilter.MaxFilter(3))
    out = np.asarray(flat).copy()
    out[np.asarray(ink) > 0] = INK
    return Image.fromarray(out)


def starter_photos() -> list[Image.Image]:
    """The real photos the starter crops (RGB)."""
    missing = [name for name in PHOTOS if not (PHOTOS_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the starter photos {missing} are not in {PHOTOS_DIR}")
    return [Image.open(PHOTOS_DIR / name).convert("RGB") for name in PHOTOS]


# The photos (320 px on the long side) are cartooned whole at these fractions of their size,
# and the pairs are cut from them at one pixel for one pixel: the scale the served model
# sees a photo at, so it learns the filter as it will be asked for it (a model trained on
# downscaled crops only blurs a full-size photo).
SCALES = (0.6, 0.8, 1.0)


def _cartooned(photos: list[Image.Image]) -> list[tuple[Image.Image, Image.Image]]:
    """Every photo at every scale, with its cartoon."""
    pairs = []
    for photo in photos:
        for scale in SCALES:
            size = (round(photo.width * scale), round(photo.height * scale))
            scaled = photo.resize(size, Image.Resampling.LANCZOS)
            pairs.append((scaled, cartoon_filter(scaled)))
    return pairs


def _photo_pair(pair: tuple[Image.Image, Image.Image], rng: np.random.Generator, size: int
                ) -> tuple[Image.Image, Image.Image]:
    """The same random ``size`` x ``size`` window of a photo and its cartoon (mirrored
    half the time)."""
    photo, cartoon = pair
    x = int(rng.integers(0, photo.width - size + 1))
    y = int(rng.integers(0, photo.height - size + 1))
    window = (x, y, x + size, y + size)
    photo, cartoon = photo.crop(window), cartoon.crop(window)
    if rng.random() < 0.5:
        flip = Image.Transpose.FLIP_LEFT_RIGHT
        photo, cartoon = photo.transpose(flip), cartoon.transpose(flip)
    return photo, cartoon


def make_cartoonize(root: Path, n: int = 24, size: int = 64, seed: int = 0,
                    n_val: int = 0, real_photos: int = 0) -> Path:
    """``train/photo`` + ``train/cartoon`` (and ``val/...`` when ``n_val``): drawn scenes,
    or with ``real_photos=1`` windows of the shipped photos and of their toon-filter
    cartoons."""
    rng = np.random.default_rng(seed)
    cartooned = _cartooned(starter_photos()) if real_photos else []
    for split, count in (("train", n), ("val", n_val)):
        for kind in ("photo", "cartoon"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            if cartooned:
                pair = cartooned[int(rng.integers(len(cartooned)))]
                photo, cartoon = _photo_pair(pair, rng, size)
            else:
                clean = scene(rng, size)
                photo = noisy(clean.filter(ImageFilter.GaussianBlur(0.6)), rng, 6.0)
                cartoon = cartoonize_target(clean)
            photo.save(root / split / "photo" / f"{i:04d}.png")
            cartoon.save(root / split / "cartoon" / f"{i:04d}.png")
    return root
