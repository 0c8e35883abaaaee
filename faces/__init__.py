"""The face stage shared by the families that work on faces (torch-free; API-side).

``detect`` finds faces with five landmarks, ``align`` + ``crop_face`` cut the 288x288
similarity-aligned crop DCT-Net's head models expect, ``paste_back`` warps a processed
crop back and blends it through a soft mask. A family's own crop around a detected face
(the U-2-Net drawing demo's) lives in that family's folder. docs/FACES.md describes the
choices and their costs.
"""

from faces.align import (
    CROP_RATIO,
    CROP_SIZE,
    Alignment,
    LandmarksDegenerate,
    align,
    crop_face,
    reference_points,
)
from faces.blend import footprint, load_mask, paste_back, soft_mask
from faces.detection import DetectLimits, Face, FaceSearch, detect, find_faces

__all__ = [
    "CROP_RATIO",
    "CROP_SIZE",
    "Alignment",
    "DetectLimits",
    "Face",
    "FaceSearch",
    "LandmarksDegenerate",
    "align",
    "crop_face",
    "detect",
    "find_faces",
    "footprint",
    "load_mask",
    "paste_back",
    "reference_points",
    "soft_mask",
]
