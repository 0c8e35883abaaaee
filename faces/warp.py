"""Affine warping in numpy with OpenCV's ``warpAffine`` sampling rules.

The aligned face crop and its way back into the frame must match what DCT-Net's authors
get from ``cv2.warpAffine`` (bilinear, constant border) to within a level per pixel,
without making OpenCV a dependency of the API process. The rules reproduced here:

- pixel centres sit on integer coordinates; the matrix maps output pixels to source
  coordinates (the inverse of the matrix given to ``cv2.warpAffine``);
- source coordinates and weights are computed in floating point, as OpenCV 5 does
  (OpenCV 4 rounded coordinates to 1/32 pixel first: up to ~3 levels apart at sharp edges,
  well under one level on average);
- a 2x2 neighbourhood reaching outside the source takes the border value for the
  missing pixels (so edges blend into the border colour);
- 8-bit output is rounded half up, float output is kept as computed.

Only the source window the output can reach is copied, so the cost follows the output
size, not the source size.
"""

from __future__ import annotations

import numpy as np


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(source: np.ndarray, to_source: np.ndarray, size: tuple[int, int],
                origin: tuple[int, int] = (0, 0),
                border: float = 0.0) -> np.ndarray:
    """Sample ``source`` (HxW or HxWxC) on an output grid of ``size`` (width, height).

    Output pixel ``(x, y)`` stands at ``(origin[0] + x, origin[1] + y)`` of the output
    plane, and ``to_source`` (2x3) maps that plane into ``source`` pixel coordinates.
    The result has ``source``'s dtype (uint8 or float32).
    """
    width, height = size
    src = source if source.ndim == 3 else source[:, :, None]
    channels = src.shape[2]
    out_dtype = source.dtype
    if width <= 0 or height <= 0:
        return np.zeros((max(height, 0), max(width, 0), *source.shape[2:]), out_dtype)

    m = np.asarray(to_source, np.float64)
    xs = np.arange(origin[0], origin[0] + width, dtype=np.float64)
    ys = np.arange(origin[1], origin[1] + height, dtype=np.float64)[:, None]
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = (sx - x0).astype(np.float32)[..., None]
    fy = (sy - y0).astype(np.float32)[..., None]

    src_h, src_w = src.shape[:2]
    # A neighbourhood starting at -1 or at the last row/column still touches the image.
    reach = (x0 >= -1) & (x0 <= src_w - 1) & (y0 >= -1) & (y0 <= src_h - 1)
    if not reach.any():
        result = np.full((height, width, channels), border, np.float32)
    else:
        # The source window (one pixel of border around the image where it reaches out).
        wx0 = int(x0[reach].min())
        wx1 = int(x0[reach].max()) + 2
        wy0 = int(y0[reach].min())
        wy1 = int(y0[reach].max()) + 2
        window = np.full((wy1 - wy0, wx1 - wx0, channels), border, np.float32)
        cx0, cx1 = max(wx0, 0), min(wx1, src_w)
        cy0, cy1 = max(wy0, 0), min(wy1, src_h)
        window[cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0] = src[cy0:cy1, cx0:cx1]

        # one flat index per output pixel: four takes are cheaper than 2-D fancy indexing
        stride = wx1 - wx0
        ix = np.clip(x0 - wx0, 0, stride - 2).astype(np.intp)
        iy = np.clip(y0 - wy0, 0, wy1 - wy0 - 2).astype(np.intp)
        flat = window.reshape(-1, channels)
        index = iy * stride + ix
        p00 = np.take(flat, index, axis=0)
        p01 = np.take(flat, index + 1, axis=0)
        p10 = np.take(flat, index + stride, axis=0)
        p11 = np.take(flat, index + stride + 1, axis=0)
        top = p00 + (p01 - p00) * fx
        result = top + (p10 + (p11 - p10) * fx - top) * fy
        result[~reach] = border

    if out_dtype == np.uint8:
        result = np.clip(np.floor(result + 0.5), 0, 255).astype(np.uint8)
    else:
        result = result.astype(out_dtype, copy=False)
    return result if source.ndim == 3 else result[:, :, 0]
