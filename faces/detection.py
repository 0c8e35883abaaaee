"""Face detection with five landmarks, bounded in time and memory.

The detector is YuNet as compiled into libfacedetection by its authors and shipped on
PyPI as ``yuface`` (weights inside the wheel's shared library; BSD-3; docs/FACES.md says
why this one): a box and a confidence per face, on the CPU, without torch. The five points
the alignment needs (eye centres, nose tip, mouth corners) come from MTCNN's O-Net on each
kept box (faces/landmarks.py), because YuNet's own points do not turn with a tilted head.

Bounds: detection runs on a copy whose longer side is at most ``max_side`` (its cost
follows those pixels; the copy is the only large allocation), with ``threads`` threads,
and only the ``max_faces`` biggest faces get landmarks and are returned.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from faces.landmarks import refine_points

if TYPE_CHECKING:
    from core.settings import Settings

# libfacedetection warns that larger inputs lose accuracy; the settings cap max_side here.
DETECTOR_MAX_SIDE = 960


@dataclass(frozen=True)
class DetectLimits:
    """How much work one detection may do (``Settings.face_*`` in the service)."""

    max_side: int = 640
    max_faces: int = 8
    min_score: float = 0.5
    threads: int = 1

    def __post_init__(self) -> None:
        if not 32 <= self.max_side <= DETECTOR_MAX_SIDE:
            raise ValueError(f"max_side must be within 32..{DETECTOR_MAX_SIDE}")
        if self.max_faces < 0:
            raise ValueError("max_faces must not be negative")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must be within 0..1")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectLimits:
        return cls(max_side=settings.face_detect_max_side,
                   max_faces=settings.face_max_per_image,
                   min_score=settings.face_min_score,
                   threads=settings.face_detect_threads)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in frame pixel coordinates (pixel centres on integers).

    ``points`` (5x2 float32): left eye, right eye (as seen in the image), nose tip, left
    and right mouth corners: the order of the alignment's reference points.
    """

    box: tuple[float, float, float, float]  # x, y, width, height
    score: float  # 0..1
    points: np.ndarray

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def int_box(self) -> tuple[int, int, int, int]:
        """The box rounded to whole pixels (x, y, width, height)."""
        x, y, w, h = self.box
        return round(x), round(y), max(round(w), 1), max(round(h), 1)


@dataclass(frozen=True)
class FaceSearch:
    """What one detection did: the faces kept, how many were found, the working scale."""

    faces: list[Face]
    found: int
    scale: float  # detection pixels per frame pixel (1.0: no downscaling)

    @property
    def dropped(self) -> int:
        """Faces found but not returned (beyond ``max_faces``)."""
        return self.found - len(self.faces)


DEFAULT_LIMITS = DetectLimits()
# libfacedetection keeps the GIL for the whole call, so calls are serialised anyway; the
# lock also keeps the per-thread OpenMP setting and the call together.
_LOCK = threading.Lock()


@cache
def _omp_set_num_threads() -> Callable[[int], object] | None:
    """The wheel's own libgomp ``omp_set_num_threads`` (None if it cannot be found).

    Left alone, libgomp starts one spinning thread per core for every detection; setting
    OMP_NUM_THREADS in the environment instead would also throttle torch in any worker
    this process starts. ``omp_set_num_threads`` acts on the calling thread only.
    """
    import yuface

    libs = Path(yuface.__file__).resolve().parent.parent / "yuface.libs"
    for lib in sorted(libs.glob("libgomp*.so*")):
        try:
            func = ctypes.CDLL(str(lib)).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        func.argtypes = [ctypes.c_int]
        return func
    return None


def _run_detector(bgr: np.ndarray, min_score: float, threads: int) -> np.ndarray:
    """Rows of (score 0..1, x, y, w, h, 10 landmark coordinates) in ``bgr``'s pixels."""
    import yuface

    with _LOCK:
        set_threads = _omp_set_num_threads()
        if set_threads is not None:
            set_threads(threads)
        scores, boxes, marks = yuface.detect(bgr, conf=min_score)
    rows = np.hstack([np.asarray(scores, np.float64)[:, None] / 100.0,
                      np.asarray(boxes, np.float64).reshape(-1, 4),
                      np.asarray(marks, np.float64).reshape(-1, 10)])
    return rows


def find_faces(image: Image.Image, limits: DetectLimits = DEFAULT_LIMITS) -> FaceSearch:
    """Detect faces in ``image``; the biggest ``limits.max_faces`` come back, biggest first."""
    width, height = image.size
    if width < 1 or height < 1:
        return FaceSearch(faces=[], found=0, scale=1.0)
    scale = min(1.0, limits.max_side / max(width, height))
    small = image if image.mode == "RGB" else image.convert("RGB")
    if scale < 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        small = small.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        # the scale actually applied on each axis (they differ by the rounding only)
        scale_x, scale_y = size[0] / width, size[1] / height
    else:
        scale_x = scale_y = 1.0
    rgb = np.asarray(small)
    rows = _run_detector(np.ascontiguousarray(rgb[:, :, ::-1]), limits.min_score,
                         limits.threads)
    # biggest first, then the cap: only the faces kept get landmarks
    order = np.lexsort((-rows[:, 0], -rows[:, 3] * rows[:, 4]))
    kept = rows[order][:limits.max_faces]
    points, _ = refine_points(rgb, kept[:, 1:5], limits.threads)

    faces = []
    for row, marks in zip(kept, points, strict=True):
        score, x, y, w, h = row[:5]
        # pixel centres: detection pixel i stands for frame position (i + 0.5) / s - 0.5
        frame_points = np.column_stack([(marks[:, 0] + 0.5) / scale_x - 0.5,
                                        (marks[:, 1] + 0.5) / scale_y - 0.5])
        box = (x / scale_x, y / scale_y, w / scale_x, h / scale_y)
        faces.append(Face(box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                          score=float(score), points=frame_points.astype(np.float32)))
    return FaceSearch(faces=faces, found=len(rows), scale=min(scale_x, scale_y))


def detect(image: Image.Image, limits: DetectLimits = DEFAULT_LIMITS) -> list[Face]:
    """The faces in ``image`` (at most ``limits.max_faces``, biggest first)."""
    return find_faces(image, limits).faces
