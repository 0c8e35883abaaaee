"""A processed crop back into the frame: inverse warp and a feathered blend.

As the authors do it: the crop and a soft square mask (the release's ``alpha.jpg``, white
over the face, fading to black towards the crop's edges) are both warped into the frame
with the inverse similarity (bilinear, black outside the crop), and the frame becomes
``mask * crop + (1 - mask) * frame``. Only the frame rectangle the crop can reach is
touched, so the cost follows the face's size, not the frame's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from faces.align import CROP_SIZE, Alignment
from faces.warp import warp_affine

# The synthetic mask's ellipse (semi-axes as fractions of the crop side) and its feather
# (fraction of the ellipse radius over which alpha falls from 1 to 0). The aligned face
# sits a little below the crop centre (eyes at ~0.48, mouth at ~0.75 of the height).
_MASK_AXES = (0.44, 0.47)
_MASK_CENTRE = (0.5, 0.52)
_MASK_FEATHER = 0.22


def soft_mask(size: int = CROP_SIZE) -> np.ndarray:
    """A feathered elliptical alpha mask (size x size, float32 in [0, 1]).

    A stand-in of the same kind as the release's ``alpha.jpg``: 1 over the face and hair,
    a smooth (smoothstep) fall to 0 well inside the crop's edges, so the warped crop's
    border never shows in the frame.
    """
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    dx = (grid[None, :] - _MASK_CENTRE[0]) / _MASK_AXES[0]
    dy = (grid[:, None] - _MASK_CENTRE[1]) / _MASK_AXES[1]
    radius = np.sqrt(dx * dx + dy * dy)
    t = np.clip((1.0 - radius) / _MASK_FEATHER, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def load_mask(source: bytes | Path | Image.Image, size: int = CROP_SIZE) -> np.ndarray:
    """A supplied mask image (e.g. the release's ``alpha.jpg``) as float32 in [0, 1].

    Read as grey (the authors convert their BGR read to grey), resized to ``size`` with
    area averaging when it is not that size already.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    else:
        image = Image.open(source)
    grey = image.convert("L")
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BOX)
    return np.asarray(grey, np.float32) / 255.0


def footprint(alignment: Alignment, frame_size: tuple[int, int]
              ) -> tuple[int, int, int, int] | None:
    """The frame rectangle (x0, y0, x1, y1) the warped crop can reach, clipped to the frame."""
    size = alignment.size
    # One pixel beyond the crop on each side still blends with the (black) border.
    corners = np.array([[-1, -1, 1], [size, -1, 1], [-1, size, 1], [size, size, 1]],
                       np.float64)
    mapped = corners @ alignment.to_image.T
    width, height = frame_size
    x0 = max(int(np.floor(mapped[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(mapped[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 2, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, alignment: Alignment,
               mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Blend ``crop`` (size x size x 3) into ``frame`` (HxWx3 float32, changed in place).

    ``mask`` defaults to :func:`soft_mask`. Returns the frame rectangle that was touched,
    or None when the face lies wholly outside the frame.
    """
    if frame.dtype != np.float32:
        raise TypeError("paste_back blends into a float32 frame")
    size = alignment.size
    if crop.shape[:2] != (size, size):
        raise ValueError(f"the crop is {crop.shape[1]}x{crop.shape[0]}, not {size}x{size}")
    alpha = soft_mask(size) if mask is None else np.asarray(mask, np.float32)
    if alpha.shape != (size, size):
        raise ValueError(f"the mask is {alpha.shape[1]}x{alpha.shape[0]}, not {size}x{size}")
    box = footprint(alignment, (frame.shape[1], frame.shape[0]))
    if box is None:
        return None
    x0, y0, x1, y1 = box
    # crop and mask go back through one warp (same coordinates) as four channels
    stacked = np.concatenate([crop.astype(np.float32, copy=False), alpha[:, :, None]], axis=2)
    back = warp_affine(stacked, alignment.to_crop, (x1 - x0, y1 - y0), origin=(x0, y0),
                       border=0.0)
    head, weight = back[:, :, :3], back[:, :, 3:]
    region = frame[y0:y1, x0:x1]
    region[...] = weight * head + (1.0 - weight) * region
    return box
