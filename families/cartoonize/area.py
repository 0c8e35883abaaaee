"""OpenCV's ``INTER_AREA`` resize in numpy, bounded in memory.

DCT-Net's authors shrink the photo with ``cv2.resize(..., INTER_AREA)`` before the
generators and stretch the blended result back with the same flag. OpenCV is not a
dependency of the API process (Pillow's box filter samples the box at pixel centres instead
of weighing partial pixels, which moves sharp edges by several levels), so the two rules
OpenCV applies are written here as one separable linear map per axis:

- shrinking: each output pixel is the area-weighted mean of the input pixels its footprint
  covers, partial pixels weighted by the covered fraction;
- enlarging: a two-tap rule, output ``d`` reads input ``s = floor(d * src / dst)`` and
  ``s + 1`` with weight ``f = (d + 1) - (s + 1) * dst / src`` on ``s + 1`` (0 when not
  positive, else its fractional part): nearest-like inside a pixel, linear at its edges.

Large frames go through in bands of rows, so the float copies stay a few MB whatever the
photo's size.
"""

from __future__ import annotations

import numpy as np

# Input rows read per band: bounds the float32 intermediates to ~256 x width x 3.
_BAND_ROWS = 256


def axis_weights(src: int, dst: int) -> np.ndarray:
    """The dst x src matrix OpenCV's INTER_AREA applies along one axis (float64)."""
    if src < 1 or dst < 1:
        raise ValueError("sizes must be positive")
    weights = np.zeros((dst, src), np.float64)
    if dst == src:
        np.fill_diagonal(weights, 1.0)
    elif dst < src:
        scale = src / dst
        for d in range(dst):
            start, end = d * scale, (d + 1) * scale
            first, last = int(np.floor(start)), min(int(np.ceil(end)), src)
            for s in range(first, last):
                weights[d, s] = min(end, s + 1) - max(start, s)
            weights[d] /= weights[d].sum()
    else:
        # OpenCV's own arithmetic (scale as the inverse of dst / src, the weight rounded to
        # float32): where d * scale lands on a whole number, rounding picks the pixel.
        inverse = dst / src
        scale = 1.0 / inverse
        for d in range(dst):
            s = int(np.floor(d * scale))
            f = float(np.float32((d + 1) - (s + 1) * inverse))
            f = 0.0 if f <= 0 else f - float(np.floor(f))
            if s >= src - 1:
                s, f = src - 1, 0.0
            weights[d, s] += 1.0 - f
            if f:
                weights[d, s + 1] += f
    return weights


def resize_area(image: np.ndarray, size: tuple[int, int],
                dtype: type[np.uint8] | type[np.float32] | None = None) -> np.ndarray:
    """``image`` (HxWxC, uint8 or float) resized to ``size`` (W, H) as ``INTER_AREA`` does,
    as ``dtype`` (default: uint8 for uint8 in, else float32); uint8 out is rounded."""
    height, width = image.shape[:2]
    out_w, out_h = size
    if dtype is None:
        dtype = np.uint8 if image.dtype == np.uint8 else np.float32
    if (out_w, out_h) == (width, height):
        if dtype is np.uint8 and image.dtype != np.uint8:
            rounded: np.ndarray = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            return rounded
        return image.astype(dtype, copy=True)
    wx = axis_weights(width, out_w).astype(np.float32)
    wy = axis_weights(height, out_h)
    channels = image.shape[2]
    out = np.empty((out_h, out_w, channels), dtype)
    band_rows = max(1, int(_BAND_ROWS * out_h / max(height, out_h)))
    for r0 in range(0, out_h, band_rows):
        r1 = min(r0 + band_rows, out_h)
        rows = wy[r0:r1]
        used = np.flatnonzero(rows.any(axis=0))
        s0, s1 = int(used[0]), int(used[-1]) + 1
        source = np.asarray(image[s0:s1], np.float32)
        across = np.einsum("hwc,dw->hdc", source, wx, optimize=True)
        band = (rows[:, s0:s1].astype(np.float32) @ across.reshape(s1 - s0, -1)
                ).reshape(r1 - r0, out_w, channels)
        if out.dtype == np.uint8:
            out[r0:r1] = np.clip(np.rint(band), 0, 255)
        else:
            out[r0:r1] = band
    return out
