"""The U-2-Net portrait demo's face crop, as a box a family can reproduce exactly.

The demo takes the biggest face box (x, y, w, h), widens it by 0.4 w left and right,
0.6 h above and 0.2 h below (each pad truncated to whole pixels), pads with white where
that leaves the image, pads the shorter side symmetrically with white towards a square
(only when the sides differ by more than 2 pixels; by half the difference, truncated) and
resizes the result to 512x512 with area averaging. The box here is that padded region in
frame coordinates, so it may reach outside the frame; outside is white.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PORTRAIT_SIZE = 512
_SIDE_PAD = 0.4
_TOP_PAD = 0.6
_BOTTOM_PAD = 0.2
_WHITE = 255


@dataclass(frozen=True)
class PortraitCrop:
    """The demo's padded face region in frame pixels: [left, right) x [top, bottom)."""

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


def portrait_crop_box(face_box: tuple[int, int, int, int]) -> PortraitCrop:
    """The region the demo cuts around ``face_box`` (x, y, width, height; whole pixels)."""
    x, y, w, h = (int(v) for v in face_box)
    side = int(float(w) * _SIDE_PAD)
    left, right = x - side, x + w + side
    top, bottom = y - int(float(h) * _TOP_PAD), y + h + int(float(h) * _BOTTOM_PAD)
    crop_w, crop_h = right - left, bottom - top
    if crop_h - 2 > crop_w:
        extra = int((crop_h - crop_w) / 2)
        left, right = left - extra, right + extra
    elif crop_w - 2 > crop_h:
        extra = int((crop_w - crop_h) / 2)
        top, bottom = top - extra, bottom + extra
    return PortraitCrop(left=left, top=top, right=right, bottom=bottom)


def cut_region(image: np.ndarray, crop: PortraitCrop) -> np.ndarray:
    """The crop's pixels of an HxWx3 uint8 ``image``, white where it leaves the image."""
    height, width = image.shape[:2]
    out = np.full((crop.height, crop.width, 3), _WHITE, np.uint8)
    x0, x1 = max(crop.left, 0), min(crop.right, width)
    y0, y1 = max(crop.top, 0), min(crop.bottom, height)
    if x0 < x1 and y0 < y1:
        out[y0 - crop.top:y1 - crop.top, x0 - crop.left:x1 - crop.left] = image[y0:y1, x0:x1]
    return out


def crop_portrait(image: np.ndarray, crop: PortraitCrop,
                  size: int = PORTRAIT_SIZE) -> np.ndarray:
    """The demo's network input: the region resized to ``size`` x ``size`` (uint8 RGB).

    Area averaging (Pillow's box filter) is what the demo's ``INTER_AREA`` does when the
    region is larger than ``size``; for a smaller region it interpolates bilinearly.
    """
    region = Image.fromarray(cut_region(image, crop))
    shrink = region.width >= size and region.height >= size
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(region.resize((size, size), method))
