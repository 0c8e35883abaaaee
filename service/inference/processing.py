"""Per-task pre- and post-processing: pure numpy and Pillow, no sessions, no I/O.

Each function follows the graph contract of its task spec (tasks/<task>.py) and the recipe
of the model family it serves (the references are in DESIGN.md); every parameter (sizes,
value ranges, mean/std) comes from the version's typed serving config, never from a default
here or from worker code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

GRID_PADDING = 2
Range = tuple[float, float]


def _chw(array: np.ndarray) -> np.ndarray:
    """HWC -> 1,C,H,W float32 (contiguous, as onnxruntime wants it)."""
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None], dtype=np.float32)


def _normalise(rgb01: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    return (rgb01 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def scale_pixels(pixels: np.ndarray, value_range: Range) -> np.ndarray:
    """Pixel values in [0, 255] -> [low, high] (float32)."""
    low, high = value_range
    return low + (high - low) * np.asarray(pixels, np.float32) / 255.0


def to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values in [low, high] -> uint8, rounding and clipping outliers."""
    scaled = (np.asarray(array, np.float32) - low) * (255.0 / (high - low))
    return np.asarray(np.clip(np.rint(scaled), 0, 255), dtype=np.uint8)


def chw_to_image(array: np.ndarray, low: float, high: float, bgr: bool = False) -> Image.Image:
    """One C,H,W tensor (3 channels) in [low, high] -> an RGB image."""
    hwc = to_uint8(array, low, high).transpose(1, 2, 0)
    if bgr:
        hwc = hwc[..., ::-1]
    return Image.fromarray(np.ascontiguousarray(hwc), mode="RGB")


# ---------------------------------------------------------------- cartoonize (DCT-Net)
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


def cartoon_input(
    image: Image.Image, max_side: int, multiple_of: int, bgr: bool, input_range: Range
) -> np.ndarray:
    """RGB image -> 1,3,H,W in ``input_range`` (BGR for DCT-Net) at the graph size."""
    graph_size = cartoon_graph_size(image.size, max_side, multiple_of)
    if graph_size != image.size:
        image = image.resize(graph_size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32)
    if bgr:
        pixels = pixels[..., ::-1]
    return _chw(scale_pixels(pixels, input_range))


def cartoon_output(cartoon: np.ndarray, size: tuple[int, int], bgr: bool,
                   output_range: Range) -> Image.Image:
    """1,3,H,W (or 3,H,W) in ``output_range`` -> RGB image resized back to ``size``."""
    low, high = output_range
    image = chw_to_image(cartoon.reshape(cartoon.shape[-3:]), low, high, bgr=bgr)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


# ---------------------------------------------------------------- matte (U-2-Net)
def matte_input(
    image: Image.Image,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    divide_by_max: bool,
) -> np.ndarray:
    """U-2-Net test preprocessing: resize to size x size, divide by the max, mean/std."""
    resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    if divide_by_max:
        peak = float(resized.max())
        rgb01 = resized / peak if peak > 0 else resized
    else:
        rgb01 = resized / 255.0
    return _chw(_normalise(rgb01, mean, std))


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


# ---------------------------------------------------------------- classify (GoogLeNet)
def classify_input(
    image: Image.Image,
    resize_shorter: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """torchvision's Resize(shorter) + CenterCrop(crop) + ToTensor + Normalize.

    Only the crop is ever resized: the centre-crop box is mapped back into the source image
    and Pillow resamples that box straight to crop x crop: the same sample positions and
    filter support as resizing the whole image first (values agree to one 8-bit level;
    Pillow rounds between its two passes). Resizing the whole image first made a 1x10000
    image a 256x2560000 one, 3.1 GB of RSS for a 125-byte upload.
    """
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
    return _chw(_normalise(np.asarray(patch, np.float32) / 255.0, mean, std))


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


# ---------------------------------------------------------------- generate (DCGAN)
def normal_latents(rng: np.random.Generator, n: int, nz: int) -> np.ndarray:
    return rng.standard_normal((n, nz, 1, 1), dtype=np.float32)


def images_from_batch(batch: np.ndarray, low: float, high: float) -> list[Image.Image]:
    return [chw_to_image(item, low, high) for item in batch]


def grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Images (equal sizes) in rows, like torchvision's make_grid, on black padding."""
    count = len(images)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    width, height = images[0].size
    canvas = Image.new(
        "RGB",
        (columns * (width + GRID_PADDING) + GRID_PADDING,
         rows * (height + GRID_PADDING) + GRID_PADDING),
    )
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        x = GRID_PADDING + col * (width + GRID_PADDING)
        y = GRID_PADDING + row * (height + GRID_PADDING)
        canvas.paste(image, (x, y))
    return canvas


# ---------------------------------------------------------------- autoencode
def autoencode_input(image: Image.Image, size: int, input_range: Range) -> np.ndarray:
    """Centre-crop square, resize to size x size, values in ``input_range``."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    square = square.resize((size, size), Image.Resampling.BILINEAR)
    return _chw(scale_pixels(np.asarray(square, np.float32), input_range))


def upscale(image: Image.Image, size: int | None) -> Image.Image:
    if size is None or size == image.width:
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` points on the segment from a to b, both ends included: steps,L."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return np.asarray((1.0 - t) * a.reshape(1, -1) + t * b.reshape(1, -1), dtype=np.float32)


def fitted_latents(
    rng: np.random.Generator, n: int, mean: np.ndarray, cholesky: np.ndarray
) -> np.ndarray:
    """n samples of N(mean, L L^T): mean + L @ eps."""
    eps = rng.standard_normal((n, mean.shape[0])).astype(np.float32)
    return np.asarray(mean[None, :] + eps @ cholesky.T, dtype=np.float32)
