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


def axis_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, the input indices (dst x k) and weights (dst x k, float64) each output
    pixel reads; k is the most any output reads (shorter rows padded with weight 0)."""
    if src < 1 or dst < 1:
        raise ValueError("sizes must be positive")
    rows: list[list[tuple[int, float]]] = []
    if dst == src:
        rows = [[(d, 1.0)] for d in range(dst)]
    elif dst < src:
        scale = src / dst
        for d in range(dst):
            start, end = d * scale, (d + 1) * scale
            first, last = int(np.floor(start)), min(int(np.ceil(end)), src)
            taps = [(s, min(end, s + 1) - max(start, s)) for s in range(first, last)]
            total = sum(w for _, w in taps)
            rows.append([(s, w / total) for s, w in taps])
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
            rows.append([(s, 1.0 - f), (min(s + 1, src - 1), f)])
    k = max(len(r) for r in rows)
    index = np.zeros((dst, k), np.int64)
    weight = np.zeros((dst, k), np.float64)
    for d, taps in enumerate(rows):
        for j, (s, w) in enumerate(taps):
            index[d, j], weight[d, j] = s, w
    return index, weight


def axis_weights(src: int, dst: int) -> np.ndarray:
    """The same map as a dense dst x src matrix (for checking; the resize uses the taps)."""
    index, weight = axis_taps(src, dst)
    dense = np.zeros((dst, src), np.float64)
    np.add.at(dense, (np.repeat(np.arange(dst), index.shape[1]), index.ravel()),
              weight.ravel())
    return dense


def _apply(taps: tuple[np.ndarray, np.ndarray], values: np.ndarray, axis: int) -> np.ndarray:
    """The taps along ``axis`` of float32 ``values``: a weighted sum of k gathers."""
    index, weight = taps
    out: np.ndarray | None = None
    for j in range(index.shape[1]):
        shape = [1] * values.ndim
        shape[axis] = -1
        term = np.take(values, index[:, j], axis=axis) * weight[:, j].astype(
            np.float32).reshape(shape)
        out = term if out is None else out + term
    assert out is not None
    return out


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
    across = axis_taps(width, out_w)
    down_index, down_weight = axis_taps(height, out_h)
    out = np.empty((out_h, out_w, image.shape[2]), dtype)
    band_rows = max(1, int(_BAND_ROWS * out_h / max(height, out_h)))
    for r0 in range(0, out_h, band_rows):
        r1 = min(r0 + band_rows, out_h)
        index = down_index[r0:r1]
        s0, s1 = int(index.min()), int(index.max()) + 1
        rows = _apply(across, np.asarray(image[s0:s1], np.float32), axis=1)
        band = _apply((index - s0, down_weight[r0:r1]), rows, axis=0)
        if out.dtype == np.uint8:
            out[r0:r1] = np.clip(np.rint(band), 0, 255)
        else:
            out[r0:r1] = band
    return out
