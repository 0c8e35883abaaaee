"""The face stage shared by the families that work on faces (torch-free; API-side).

``detect`` finds faces with five landmarks, ``align`` + ``crop_face`` cut the 288x288
similarity-aligned crop DCT-Net's head models expect, ``paste_back`` warps a processed
crop back and blends it through a soft mask, and ``portrait_crop_box`` reproduces the
U-2-Net portrait demo's crop. docs/FACES.md describes the choices and their costs.
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
from faces.detect import DetectLimits, Face, FaceSearch, detect, find_faces
from faces.portrait import PORTRAIT_SIZE, PortraitCrop, crop_portrait, portrait_crop_box

__all__ = [
    "CROP_RATIO",
    "CROP_SIZE",
    "PORTRAIT_SIZE",
    "Alignment",
    "DetectLimits",
    "Face",
    "FaceSearch",
    "LandmarksDegenerate",
    "PortraitCrop",
    "align",
    "crop_face",
    "crop_portrait",
    "detect",
    "find_faces",
    "footprint",
    "load_mask",
    "paste_back",
    "portrait_crop_box",
    "reference_points",
    "soft_mask",
]
