"""DCT-Net's compound cartoonization, as its authors' ``Cartoonizer.cartoonize`` runs it.

Five steps over two generators (numpy only; the graphs are callables, so the API, tests
and benchmarks run the same code):

1. shrink the photo (area averaging) until its *shorter* side is at most 720 (what the
   authors' ``resize_size`` does; a 4000x3000 photo becomes 960x720), pad right and bottom
   with white to multiples of 16 and run the background generator on the whole of it;
2. find faces and their five points on the shrunk photo; per face, the 288x288 crop
   aligned to the 5-point reference (ratio 0.75, white outside the photo; faces/align.py);
3. run the head generator on the crops;
4. warp each cartoon head and the blend mask back with the inverse similarity and blend,
   ``mask * head + (1 - mask) * result``, biggest face first (faces/blend.py);
5. stretch the result back to the photo's size (area rule) and round to 8 bits.

Both generators see BGR pixels in 0..255 and answer 8-bit BGR, truncated as the released
graphs cast (``tf.cast(uint8)`` of ``(clip(y, -0.999999, 0.999999) + 1) * 127.5``);
:func:`graph_input` / :func:`graph_output` convert to and from the served ONNX graphs'
[-1, 1] tensors.

Where this differs from the authors' code, on purpose: their five points come from their
68-point model (pupils found by thresholding the eye region; nose tip and mouth corners
as points 30, 48, 54), ours from the shared face stage (YuNet + O-Net eye centres, nose
tip, mouth corners); with no face their code returns the shrunk result without stretching
it back, this returns the photo's size in every case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from faces import Face, align, crop_face, paste_back
from faces.align import LandmarksDegenerate
from families.cartoonize.area import resize_area

# The authors' constants: shorter side cap, pad multiple, the head crop's side.
SHORT_SIDE = 720
PAD_MULTIPLE = 16
HEAD_SIZE = 288
# The released graphs clip to this before scaling to 0..255 and truncating.
_OUT_CLIP = 0.999999

# BGR uint8 HxWx3 in, the same shape and type out (the background generator).
RunGraph = Callable[[np.ndarray], np.ndarray]
# BGR uint8 Nx288x288x3 crops in -> (the cartoon heads, same shape and type; the 288x288
# float blend mask in [0, 1] that goes with the head generator).
RunHeads = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# RGB uint8 HxWx3 -> (the faces kept, biggest first; how many were found in all).
FindFaces = Callable[[np.ndarray], tuple[Sequence[Face], int]]


@dataclass
class CompoundResult:
    """The cartoon (RGB uint8, the photo's size) and what was done to get it."""

    image: np.ndarray
    work_size: tuple[int, int]  # (W, H) the generators saw, before padding
    faces_found: int = 0
    # Face boxes (x, y, w, h) in the photo's pixels, of the heads blended in.
    heads: list[tuple[float, float, float, float]] = field(default_factory=list)
    skipped: int = 0  # kept faces whose points could not be aligned

    @property
    def faces_cartoonized(self) -> int:
        return len(self.heads)


def work_size(size: tuple[int, int], short_side: int = SHORT_SIDE,
              long_side: int | None = None) -> tuple[int, int]:
    """(W, H) after the authors' ``resize_size``: only a photo whose shorter side exceeds
    ``short_side`` shrinks, to exactly that shorter side (the other side truncated).
    ``long_side`` (the server's limit, not the authors') shrinks a panorama further."""
    width, height = size
    if min(width, height) > short_side:
        if height > width:
            width, height = short_side, int(short_side * height / width)
        else:
            width, height = int(short_side * width / height), short_side
    if long_side is not None and max(width, height) > long_side:
        scale = long_side / max(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    return width, height


def pad_to_multiple(bgr: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """White right/bottom padding to multiples of ``multiple``, the authors' padTo16x: an
    image already a multiple on both sides is kept; otherwise *both* sides grow to the next
    multiple above (a side that already was one gains a whole white block)."""
    height, width = bgr.shape[:2]
    if height % multiple == 0 and width % multiple == 0:
        return bgr
    padded = np.full(((height // multiple + 1) * multiple, (width // multiple + 1) * multiple,
                      bgr.shape[2]), 255, bgr.dtype)
    padded[:height, :width] = bgr
    return padded


def graph_input(bgr: np.ndarray) -> np.ndarray:
    """BGR 0..255 (HxWx3 or NxHxWx3) -> N,3,H,W float32 in [-1, 1] (x / 127.5 - 1, as the
    released graphs scale their input)."""
    batch = bgr[None] if bgr.ndim == 3 else bgr
    scaled = np.asarray(batch, np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def graph_output(cartoon: np.ndarray) -> np.ndarray:
    """N,3,H,W in [-1, 1] -> NxHxWx3 uint8, truncated as the released graphs cast."""
    clipped = np.clip(np.asarray(cartoon, np.float32), -_OUT_CLIP, _OUT_CLIP)
    pixels = ((clipped + np.float32(1.0)) * np.float32(127.5)).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def background_only(rgb: np.ndarray, run_bg: RunGraph, short_side: int = SHORT_SIDE,
                    long_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: (the shrunk RGB photo, the background cartoon as float32 BGR at its size)."""
    height, width = rgb.shape[:2]
    size = work_size((width, height), short_side, long_side)
    small = resize_area(rgb, size)
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    cartoon = run_bg(pad_to_multiple(bgr))
    return small, cartoon[:size[1], :size[0]].astype(np.float32)


def cartoonize_compound(rgb: np.ndarray, run_bg: RunGraph, run_head: RunHeads | None,
                        find: FindFaces | None, short_side: int = SHORT_SIDE,
                        long_side: int | None = None) -> CompoundResult:
    """The five steps on an RGB uint8 photo. ``run_head`` or ``find`` None: background only
    (no head graph, or faces turned off)."""
    height, width = rgb.shape[:2]
    small, result = background_only(rgb, run_bg, short_side, long_side)
    work = (small.shape[1], small.shape[0])
    report = CompoundResult(image=rgb, work_size=work)
    if run_head is not None and find is not None:
        faces, report.faces_found = find(small)
        aligned = []
        for face in faces:
            try:
                aligned.append((face, align(face.points, HEAD_SIZE)))
            except LandmarksDegenerate:
                report.skipped += 1
        if aligned:
            crops = np.stack([crop_face(small, a)[:, :, ::-1] for _, a in aligned])
            heads, mask = run_head(np.ascontiguousarray(crops))
            sx, sy = width / work[0], height / work[1]
            for (face, alignment), head in zip(aligned, heads, strict=True):
                if paste_back(result, head, alignment, mask) is not None:
                    x, y, w, h = face.box
                    report.heads.append((x * sx, y * sy, w * sx, h * sy))
    report.image = np.ascontiguousarray(resize_area(result, (width, height), np.uint8)[:, :, ::-1])
    return report
