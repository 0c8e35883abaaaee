"""The U-2-Net portrait demo's face crop, as a box a family can reproduce exactly.

The demo takes the biggest face box (x, y, w, h), widens it by 0.4 w left and right,
0.6 h above and 0.2 h below (each pad truncated to whole pixels), pads with white where
that leaves the image, pads the shorter side symmetrically with white towards a square
(only when the sides differ by more than 2 pixels; by half the difference, truncated) and
resizes the result to 512x512 with area averaging. The box here is the cut region in
frame coordinates (it may reach outside the frame) plus the white square padding.
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
    """The demo's crop in frame pixels.

    The content is [left, right) x [top, bottom) of the frame (white where that leaves
    the frame); ``pad_x`` / ``pad_y`` white columns / rows are added on each side to make
    it square. The network input covers [outer_left, outer_right) x [outer_top,
    outer_bottom), resized to 512x512, which is also where its answer goes back.
    """

    left: int
    top: int
    right: int
    bottom: int
    pad_x: int = 0
    pad_y: int = 0

    @property
    def outer(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) including the white square padding."""
        return (self.left - self.pad_x, self.top - self.pad_y,
                self.right + self.pad_x, self.bottom + self.pad_y)

    @property
    def width(self) -> int:
        return self.right - self.left + 2 * self.pad_x

    @property
    def height(self) -> int:
        return self.bottom - self.top + 2 * self.pad_y


def portrait_crop_box(face_box: tuple[int, int, int, int]) -> PortraitCrop:
    """The crop the demo cuts around ``face_box`` (x, y, width, height; whole pixels)."""
    x, y, w, h = (int(v) for v in face_box)
    side = int(float(w) * _SIDE_PAD)
    left, right = x - side, x + w + side
    top, bottom = y - int(float(h) * _TOP_PAD), y + h + int(float(h) * _BOTTOM_PAD)
    crop_w, crop_h = right - left, bottom - top
    pad_x = pad_y = 0
    if crop_h - 2 > crop_w:
        pad_x = int((crop_h - crop_w) / 2)
    elif crop_w - 2 > crop_h:
        pad_y = int((crop_w - crop_h) / 2)
    return PortraitCrop(left=left, top=top, right=right, bottom=bottom,
                        pad_x=pad_x, pad_y=pad_y)


def cut_region(image: np.ndarray, crop: PortraitCrop) -> np.ndarray:
    """The crop's pixels of an HxWx3 uint8 ``image`` before resizing; white outside the
    frame and in the square padding."""
    height, width = image.shape[:2]
    out = np.full((crop.height, crop.width, 3), _WHITE, np.uint8)
    x0, x1 = max(crop.left, 0), min(crop.right, width)
    y0, y1 = max(crop.top, 0), min(crop.bottom, height)
    if x0 < x1 and y0 < y1:
        ox, oy = crop.pad_x - crop.left, crop.pad_y - crop.top
        out[y0 + oy:y1 + oy, x0 + ox:x1 + ox] = image[y0:y1, x0:x1]
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
