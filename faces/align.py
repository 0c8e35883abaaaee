"""Five-point similarity alignment, as DCT-Net's authors crop heads.

The reference is the common 5-point face template of a 96x112 crop (eye centres, nose tip,
mouth corners), moved one pixel right and down and centred in a 112x112 square, then
scaled about the square's centre by ``ratio`` (0.75 leaves room for hair and chin) and
stretched to the crop size (288). The similarity (rotation, uniform scale, translation;
no reflection) is the least-squares fit that maps the reference points onto the image
points, measured in image pixels; the crop uses its inverse. That is the fit the authors'
code ends up choosing for real faces, and what the head models were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faces.warp import invert_affine, warp_affine

# Template points in a 96x112 (width x height) crop: left eye, right eye (as seen in the
# image), nose tip, left and right mouth corners.
TEMPLATE_96x112 = np.array([
    [30.29459953, 51.69630051],
    [65.53179932, 51.50139999],
    [48.02519989, 71.73660278],
    [33.54930115, 92.3655014],
    [62.72990036, 92.20410156],
])
TEMPLATE_SIDE = 112.0
CROP_SIZE = 288
CROP_RATIO = 0.75
# The crop's border colour outside the image (white, as the authors').
CROP_BORDER = 255.0


class LandmarksDegenerate(ValueError):
    """The five points do not span a face (they coincide or lie on one point)."""


def reference_points(crop_size: int = CROP_SIZE, ratio: float = CROP_RATIO) -> np.ndarray:
    """The 5 reference points (5x2, float32) in a ``crop_size`` square crop."""
    square = TEMPLATE_96x112 + 1.0 + np.array([(TEMPLATE_SIDE - 96.0) / 2.0, 0.0])
    points = square.astype(np.float32)
    centre = np.float32(TEMPLATE_SIDE / 2.0)
    points = (points - centre) * np.float32(ratio) + centre
    scaled: np.ndarray = (points * np.float32(crop_size / TEMPLATE_SIDE)).astype(np.float32)
    return scaled


@dataclass(frozen=True, eq=False)
class Alignment:
    """One face's similarity: ``to_image`` maps crop pixels into the frame, ``to_crop`` back."""

    to_image: np.ndarray  # 2x3
    to_crop: np.ndarray  # 2x3
    size: int

    @property
    def scale(self) -> float:
        """Frame pixels per crop pixel."""
        return float(np.hypot(self.to_image[0, 0], self.to_image[1, 0]))


def align(points: np.ndarray, crop_size: int = CROP_SIZE,
          ratio: float = CROP_RATIO) -> Alignment:
    """The similarity taking the 5 image ``points`` (5x2) onto the reference of the crop."""
    image_pts = np.asarray(points, np.float32).astype(np.float64).reshape(5, 2)
    ref = reference_points(crop_size, ratio).astype(np.float64)
    x, y = ref[:, :1], ref[:, 1:]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # u = a*x + b*y + tx ; v = -b*x + a*y + ty, stacked as one linear system in (a, b, tx, ty)
    design = np.vstack([np.hstack([x, y, ones, zeros]), np.hstack([y, -x, zeros, ones])])
    target = np.concatenate([image_pts[:, 0], image_pts[:, 1]])
    if not np.isfinite(image_pts).all():
        raise LandmarksDegenerate("the face points are not finite numbers")
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, target, rcond=None)
    # A crop pixel must cover some frame area, or there is no inverse to paste back with.
    if np.hypot(a, b) < 1e-3:
        raise LandmarksDegenerate("the five face points coincide")
    to_image = np.array([[a, b, tx], [-b, a, ty]])
    return Alignment(to_image=to_image, to_crop=invert_affine(to_image), size=crop_size)


def crop_face(image: np.ndarray, alignment: Alignment,
              border: float = CROP_BORDER) -> np.ndarray:
    """The aligned square crop (size x size x 3, image's dtype) of an HxWx3 ``image``."""
    size = alignment.size
    return warp_affine(image, alignment.to_image, (size, size), border=border)
