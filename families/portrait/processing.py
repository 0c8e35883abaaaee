"""portrait (U-2-Net portrait drawing) pre- and post-processing: numpy and Pillow only.

The steps are the authors' (their portrait demo, test and composite scripts):

- the region: the demo's padded crop around the biggest face (found by the shared face
  stage; white where it leaves the frame or squares the crop up), or the whole image;
- the network input: that region resized to ``size`` x ``size`` the way the demo's
  ``cv2.resize(..., INTER_AREA)`` does it (``area_resize``), divided by its max, normalised
  with ImageNet's mean/std (RGB order);
- the drawing: ``1 - d1`` min-max normalised, to 8 bits as Pillow converts a float image,
  resized (bilinear) to the region's size, as the test script saves it;
- the composite: the region blurred with a Gaussian (``sigma``) times ``alpha`` plus the
  drawing (scaled so its max is 255) times ``1 - alpha``.

The API and INT8 calibration both build inputs with ``portrait_input``, so they cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from faces import DetectLimits, find_faces

if TYPE_CHECKING:
    from families.portrait.spec import PortraitServing

CropMode = Literal["face", "none"]
# The authors' Gaussian keeps 4 sigma each side (scipy's default truncation).
_TRUNCATE = 4.0
MAX_SIGMA = 32.0
_WHITE = 255


@dataclass(frozen=True)
class Box:
    """A rectangle in frame pixels, [left, right) x [top, bottom); it may leave the frame."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Region:
    """What one request draws: ``crop`` in frame pixels (it may reach outside the frame),
    of which only ``content`` shows the photo: the demo pads with white both where its
    margin leaves the frame and where it squares the crop up. ``face_found`` is None when
    no face was looked for."""

    crop: Box
    content: Box
    face_found: bool | None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.crop.left, self.crop.top, self.crop.right, self.crop.bottom


def whole_image(image: Image.Image, face_found: bool | None) -> Region:
    frame = Box(left=0, top=0, right=image.width, bottom=image.height)
    return Region(frame, frame, face_found)


def face_region(face_box: tuple[int, int, int, int]) -> Region:
    """The demo's crop of a face box (x, y, w, h; whole pixels): margins of 0.4 w left and
    right, 0.6 h above and 0.2 h below (each truncated) give the content; when its sides
    differ by more than 2 pixels, white bands of half the difference (truncated) on both
    sides of the shorter one square it up."""
    x, y, w, h = (int(v) for v in face_box)
    side = int(float(w) * 0.4)
    content = Box(left=x - side, top=y - int(float(h) * 0.6),
                  right=x + w + side, bottom=y + h + int(float(h) * 0.2))
    left, top, right, bottom = content.left, content.top, content.right, content.bottom
    if content.height - 2 > content.width:
        extra = int((content.height - content.width) / 2)
        left, right = left - extra, right + extra
    elif content.width - 2 > content.height:
        extra = int((content.width - content.height) / 2)
        top, bottom = top - extra, bottom + extra
    return Region(Box(left, top, right, bottom), content, True)


def choose_region(image: Image.Image, mode: CropMode, limits: DetectLimits) -> Region:
    """The demo's crop around the biggest face, or the whole image (no face, or ``none``)."""
    if mode == "none":
        return whole_image(image, None)
    faces = find_faces(image, limits).faces  # biggest first
    if not faces:
        return whole_image(image, False)
    return face_region(faces[0].int_box())


def region_pixels(image: Image.Image, region: Region) -> np.ndarray:
    """The region's HxWx3 uint8 pixels: the photo inside ``content``, white elsewhere."""
    rgb = np.asarray(image.convert("RGB"))
    crop, content = region.crop, region.content
    out = np.full((crop.height, crop.width, 3), _WHITE, np.uint8)
    x0, x1 = max(content.left, 0), min(content.right, image.width)
    y0, y1 = max(content.top, 0), min(content.bottom, image.height)
    if x0 < x1 and y0 < y1:
        out[y0 - crop.top:y1 - crop.top, x0 - crop.left:x1 - crop.left] = rgb[y0:y1, x0:x1]
    return out


# ---- the demo's resize: OpenCV's INTER_AREA, written out so the API needs no OpenCV


def _area_weights(src: int, dst: int) -> np.ndarray:
    """dst x src weights of OpenCV's true area averaging (src >= dst)."""
    scale = src / dst
    weights = np.zeros((dst, src), np.float64)
    for i in range(dst):
        start, end = i * scale, (i + 1) * scale
        first, last = math.floor(start), min(math.ceil(end), src)
        for j in range(first, last):
            weights[i, j] = (min(end, j + 1) - max(start, j)) / scale
    return weights


def _enlarge_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA when enlarging: per destination pixel two source indices and
    their 11-bit fixed-point weights (a bilinear variant that blends only across the
    source-pixel boundary inside each destination pixel; float32 as OpenCV computes it)."""
    scale, inv = src / dst, dst / src  # doubles, the blend cast to float as OpenCV does
    taps = np.zeros((dst, 2), np.int64)
    weights = np.zeros((dst, 2), np.int64)
    for i in range(dst):
        left = math.floor(i * scale)
        frac = np.float32((i + 1) - (left + 1) * inv)
        frac = np.float32(0) if frac <= 0 else frac - np.float32(math.floor(frac))
        if left >= src - 1:
            left, frac = src - 1, np.float32(0)
        taps[i] = (left, min(left + 1, src - 1))
        weights[i] = (round(float((np.float32(1) - frac) * 2048)), round(float(frac * 2048)))
    return taps, weights


def _enlarge(pixels: np.ndarray, size: int) -> np.ndarray:
    # OpenCV's vectorised fixed-point rounding, step by step, so the bytes are its bytes.
    height, width = pixels.shape[:2]
    (ys, wy), (xs, wx) = _enlarge_taps(height, size), _enlarge_taps(width, size)
    data = pixels.astype(np.int64)
    rows = data[:, xs[:, 0]] * wx[None, :, 0, None] + data[:, xs[:, 1]] * wx[None, :, 1, None]
    top, bottom = rows[ys[:, 0]] >> 4, rows[ys[:, 1]] >> 4
    mixed = ((wy[:, 0, None, None] * top) >> 16) + ((wy[:, 1, None, None] * bottom) >> 16)
    out: np.ndarray = np.clip((mixed + 2) >> 2, 0, 255).astype(np.uint8)
    return out


def area_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 uint8, as ``cv2.resize(pixels, (size, size),
    interpolation=cv2.INTER_AREA)`` does it (its bytes when enlarging; within one level on
    rare pixels when shrinking)."""
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels.copy()
    if not (height >= size and width >= size):  # OpenCV averages only when both shrink
        return _enlarge(pixels, size)
    rows, cols = _area_weights(height, size), _area_weights(width, size)
    data = pixels.astype(np.float64)
    out = np.einsum("ij,jkc->ikc", rows, data)
    out = np.einsum("lk,ikc->ilc", cols, out)
    rounded: np.ndarray = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return rounded


def portrait_input(pixels: np.ndarray, config: PortraitServing) -> np.ndarray:
    """Region pixels (HxWx3 uint8) -> the graph's f32[1,3,S,S] input."""
    net = area_resize(pixels, config.size).astype(np.float32)
    peak = float(net.max())
    rgb01 = net / peak if peak > 0 else net
    normed = (rgb01 - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1)[None], dtype=np.float32)


def main_inputs(image: Image.Image, config: PortraitServing,
                limits: DetectLimits | None = None) -> dict[str, np.ndarray]:
    """The main graph's inputs for one upload served with the defaults (the face crop)."""
    region = choose_region(image, "face", limits or DetectLimits())
    return {"image": portrait_input(region_pixels(image, region), config)}


def split_side_by_side(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """APDrawingGAN's stitched pair -> (photo, drawing): the left and right halves."""
    half = image.width // 2
    return (image.crop((0, 0, half, image.height)),
            image.crop((half, 0, 2 * half, image.height)))


# ---- the drawing and the composite


def drawing_values(d1: np.ndarray) -> np.ndarray:
    """The side output d1 -> ``1 - d1`` min-max normalised to [0, 1] (float32, HxW)."""
    pred = 1.0 - np.asarray(d1, np.float32).reshape(d1.shape[-2:])
    low, high = float(pred.min()), float(pred.max())
    if high <= low:
        return np.ones_like(pred)  # nothing drawn: the blank page
    return (pred - low) / (high - low)


def drawing_image(values: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """[0, 1] drawing -> 8-bit L at ``size`` (width, height), as the test script saves it:
    Pillow's float-to-8-bit conversion, then a bilinear resize."""
    eight = Image.fromarray(np.asarray(values, np.float32) * 255.0, mode="F").convert("L")
    return eight if eight.size == size else eight.resize(size, Image.Resampling.BILINEAR)


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel: np.ndarray = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / float(kernel.sum())


def _blur_axis(data: np.ndarray, axis: int, kernel: np.ndarray) -> np.ndarray:
    """``data`` convolved with ``kernel`` along ``axis``, edges repeated (mode 'nearest'),
    through the FFT: its cost does not grow with sigma, and it allocates no length^2."""
    radius = len(kernel) // 2
    pad = [(0, 0)] * data.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(data, pad, mode="edge")
    size = padded.shape[axis] + len(kernel) - 1
    spectrum = np.fft.rfft(padded, size, axis=axis)
    shape = [1] * data.ndim
    shape[axis] = -1
    spectrum *= np.fft.rfft(kernel, size).reshape(shape)
    full = np.fft.irfft(spectrum, size, axis=axis)
    index = [slice(None)] * data.ndim
    index[axis] = slice(2 * radius, 2 * radius + data.shape[axis])
    out: np.ndarray = full[tuple(index)]
    return out


def blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Each channel of HxWx3 blurred with a Gaussian of ``sigma`` pixels (float64)."""
    data = np.asarray(pixels, np.float64)
    if sigma <= 0:
        return data
    kernel = gaussian_kernel(sigma)
    return _blur_axis(_blur_axis(data, 0, kernel), 1, kernel)


def composite(pixels: np.ndarray, drawing: Image.Image, sigma: float,
              alpha: float) -> Image.Image:
    """The authors' composite: blurred region x alpha + drawing (max -> 255) x (1 - alpha)."""
    lines = np.asarray(drawing, np.float64)
    lines = lines / (lines.max() + 1e-8) * 255.0
    mixed = blur(pixels, sigma) * alpha + lines[:, :, None] * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), mode="RGB")


def paste(image: Image.Image, region: Region, drawn: Image.Image) -> Image.Image:
    """The frame with the region's pixels replaced by ``drawn`` (its part inside the frame)."""
    frame = image.convert("RGB")
    crop = region.crop
    left, top = max(crop.left, 0), max(crop.top, 0)
    right, bottom = min(crop.right, frame.width), min(crop.bottom, frame.height)
    if left >= right or top >= bottom:
        return frame
    inside = drawn.convert("RGB").crop((left - crop.left, top - crop.top,
                                        right - crop.left, bottom - crop.top))
    frame.paste(inside, (left, top))
    return frame
