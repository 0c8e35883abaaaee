"""DCT-Net's compound cartoonization re-implemented from its authors' code, with OpenCV,
as the reference the served pipeline is checked against.

Step by step as ``Cartoonizer.cartoonize`` (source/cartoonize.py) with ``resize_size``,
``padTo16x`` (source/utils.py) and ``warp_and_crop_face`` (source/mtcnn_pytorch/src/
align_trans.py): cv2.resize INTER_AREA when the shorter side exceeds 720; white padding to
multiples of 16; the background graph on the BGR photo; per face the 288 aligned crop of the
RGB photo, fed as BGR to the head graph; the head and the mask warped back with
cv2.warpAffine (black border) and blended; cv2.resize INTER_AREA back. Two documented
departures, the same as the served pipeline's: the five points are given (the authors'
68-point detector is not available), and the no-face result is resized back too.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from tests.unit.test_faces import authors_crop

# BGR uint8 (HxWx3 or NxHxWx3) -> the same, as the released .pb graphs answer.
Graph = Callable[[np.ndarray], np.ndarray]


def resize_size(image: np.ndarray, size: int = 720) -> np.ndarray:
    h, w, _ = image.shape
    if min(h, w) > size:
        if h > w:
            h, w = int(size * h / w), size
        else:
            h, w = size, int(size * w / h)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def pad_to_16x(image: np.ndarray) -> tuple[np.ndarray, int, int]:
    h, w, _ = image.shape
    if h % 16 == 0 and w % 16 == 0:
        return image, h, w
    nh, nw = (h // 16 + 1) * 16, (w // 16 + 1) * 16
    padded = np.ones((nh, nw, 3), np.uint8) * 255
    padded[:h, :w, :] = image
    return padded, h, w


def authors_cartoonize(img: np.ndarray, bg: Graph, head: Graph, mask: np.ndarray,
                       points_of: Callable[[np.ndarray], list[np.ndarray]]) -> np.ndarray:
    """RGB uint8 photo -> RGB uint8 cartoon, the authors' way."""
    ori_h, ori_w, _ = img.shape
    img = resize_size(img, size=720)
    img_bgr = img[:, :, ::-1]
    pad_bg, pad_h, pad_w = pad_to_16x(np.ascontiguousarray(img_bgr))
    res = bg(pad_bg)[:pad_h, :pad_w, :]
    for f5p in points_of(img):
        head_img, trans_inv = authors_crop(img, f5p)
        head_res = head(np.ascontiguousarray(head_img[:, :, ::-1])[None])[0]
        head_back = cv2.warpAffine(head_res, trans_inv, (img.shape[1], img.shape[0]),
                                   borderValue=(0, 0, 0))
        mask_back = cv2.warpAffine(mask, trans_inv, (img.shape[1], img.shape[0]),
                                   borderValue=(0, 0, 0))[:, :, None]
        res = mask_back * head_back + (1 - mask_back) * res
    res = cv2.resize(np.asarray(res, np.float32), (ori_w, ori_h),
                     interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(res), 0, 255).astype(np.uint8)[:, :, ::-1]
