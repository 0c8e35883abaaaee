"""Fine-tuning a compound style (worker only): the face crops the head generator learns
from, and the served-output evaluation that validation and the gate score versions by.

Face crops: each training photo is shrunk as serving shrinks it (``compound.work_size``),
the shared face stage finds its faces and five points, and the 288x288 crop aligned to
the 5-point reference is cut from the photo *and* from its cartoon with the photo's
transform (the pairs are aligned, so one transform fits both). The crops are written once
per job (``HEAD_CROPS_DIR`` in the job's work directory) and trained on like any pairs.

Served evaluation: a compound job is scored on what ``POST /cartoonize`` answers, the
whole photo through :func:`compound.cartoonize_compound` (the API's own code) at the
photo's size, against the cartoon: L1, SSIM, PSNR and ``face_l1`` (L1 inside the boxes of
the faces the face stage finds). The same code scores a PyTorch net (validation, the
base), a published version's ONNX graphs (the gate) and the identity (the photo itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from faces import DetectLimits, Face, LandmarksDegenerate, align, crop_face, find_faces
from families.cartoonize.area import resize_area
from families.cartoonize.compound import (
    HEAD_SIZE,
    cartoonize_compound,
    graph_input,
    graph_output,
    work_size,
)
from families.cartoonize.compound_net import DCTNetCompound
from families.cartoonize.net import DCTNet
from families.cartoonize.processing import cartoon_input, cartoon_output
from families.cartoonize.spec import CartoonizeServing
from worker.training.datasets import PairedImages
from worker.training.losses import ssim
from worker.training.metrics import Mean, psnr
from worker.training.ort_budget import cpu_session

HEAD_CROPS_DIR = "head_crops"
# How a plain (one-generator) version is served: dctnet's serving config.
PLAIN_SERVING = CartoonizeServing(max_side=720, multiple_of=4, color_order="BGR",
                                  input_range=(-1, 1), output_range=(-1, 1))

# RGB uint8 photo -> RGB uint8 cartoon of the same size (one served answer).
Serve = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Shrink:
    """How serving shrinks a photo before both generators (short side, server's long side)."""

    short_side: int
    long_side: int | None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        size = work_size((width, height), self.short_side, self.long_side)
        return rgb if size == (width, height) else resize_area(rgb, size)


def load_pair(photo: Path, cartoon: Path) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its cartoon as RGB uint8 of the photo's size."""
    with Image.open(photo) as a, Image.open(cartoon) as b:
        rgb = a.convert("RGB")
        toon = b.convert("RGB")
        if toon.size != rgb.size:  # a stray size difference must not misalign the faces
            toon = toon.resize(rgb.size, Image.Resampling.BILINEAR)
        return np.asarray(rgb), np.asarray(toon)


def _faces(small: np.ndarray, limits: DetectLimits) -> list[Face]:
    return find_faces(Image.fromarray(small), limits).faces


@dataclass
class HeadCrops:
    """The aligned face crops of a split: (photo crop, cartoon crop) PNG paths."""

    pairs: list[tuple[Path, Path]]
    photos_with_faces: int
    photos: int


def write_head_crops(pairs: Sequence[tuple[Path, Path]], folder: Path, shrink: Shrink,
                     limits: DetectLimits) -> HeadCrops:
    """Cut the aligned 288x288 crops of every face of every pair into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, Path]] = []
    with_faces = 0
    for i, (photo_path, cartoon_path) in enumerate(pairs):
        photo, cartoon = load_pair(photo_path, cartoon_path)
        small, small_toon = shrink(photo), shrink(cartoon)
        found = 0
        for j, face in enumerate(_faces(small, limits)):
            try:
                alignment = align(face.points, HEAD_SIZE)
            except LandmarksDegenerate:
                continue
            names = (folder / f"{i:05d}_{j}_photo.png", folder / f"{i:05d}_{j}_cartoon.png")
            for image, name in zip((small, small_toon), names, strict=True):
                Image.fromarray(crop_face(image, alignment)).save(name)
            out.append(names)
            found += 1
        with_faces += found > 0
    return HeadCrops(out, with_faces, len(pairs))


# -- training items --------------------------------------------------------------------------


class Zipped(Dataset[tuple[torch.Tensor, ...]]):
    """Item i of each dataset (modulo its length) in one item: a step of a compound job
    trains every generator it trains, each on its own pairs."""

    def __init__(self, sets: Sequence[PairedImages]) -> None:
        self.sets = list(sets)

    def __len__(self) -> int:
        return max(len(s) for s in self.sets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        i, seed = key
        out: list[torch.Tensor] = []
        for k, part in enumerate(self.sets):  # an independent draw per part
            out.extend(part[(i % len(part), (seed + 7919 * k) % 2**62)])
        return tuple(out)


class PairPaths(Dataset[tuple[str, str]]):
    """Evaluation items of a compound job: the pair's paths (scored whole, at any size)."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return str(self.pairs[i][0]), str(self.pairs[i][1])


def compound_of(base: DCTNet) -> DCTNetCompound:
    """A compound whose generators both start as a plain version's generator."""
    gen = base.generator
    model = DCTNetCompound(gen.conv0.out_channels, len(gen.blocks))
    model.background.load_state_dict(base.state_dict())
    model.head.load_state_dict(base.state_dict())
    return model



# -- the served answer, from a PyTorch net or from graphs ------------------------------------


def _torch_graph(net: nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A generator in the released graphs' contract (BGR uint8 in and out), in PyTorch."""
    def run(bgr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(graph_input(bgr)).to(device)).float().cpu().numpy()
        result = graph_output(out)
        return result if bgr.ndim == 4 else result[0]
    return run


def compound_serve(run_bg: Callable[[np.ndarray], np.ndarray],
                   run_heads: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                   shrink: Shrink, faces_of: Callable[[np.ndarray], list[Face]]) -> Serve:
    def serve(rgb: np.ndarray) -> np.ndarray:
        def find(small: np.ndarray) -> tuple[list[Face], int]:
            found = faces_of(small)
            return found, len(found)
        return cartoonize_compound(rgb, run_bg, run_heads, find, shrink.short_side,
                                   shrink.long_side).image
    return serve


def plain_serve(run: Callable[[np.ndarray], np.ndarray], config: CartoonizeServing,
                max_side: int) -> Serve:
    """A one-generator version as /cartoonize serves it (``run``: N,3,H,W -> N,3,H,W)."""
    def serve(rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(rgb)
        out = run(cartoon_input(image, config, min(config.max_side, max_side)))
        return np.asarray(cartoon_output(out, image.size, config))
    return serve


def torch_serve(module: nn.Module, device: torch.device, shrink: Shrink,
                faces_of: Callable[[np.ndarray], list[Face]]) -> Serve:
    """What the version made of ``module`` answers: compound, plain, or the identity."""
    if isinstance(module, DCTNetCompound):
        head = _torch_graph(module.head, device)
        mask = module.mask.detach().cpu().numpy().astype(np.float32)
        return compound_serve(_torch_graph(module.background, device),
                              lambda crops: (head(crops), mask), shrink, faces_of)
    if isinstance(module, nn.Identity):
        return lambda rgb: rgb

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = module(torch.from_numpy(x).to(device)).float().cpu().numpy()
        return out
    return plain_serve(run, PLAIN_SERVING, shrink.long_side or PLAIN_SERVING.max_side)


def onnx_serve(model_file: Path, head_file: Path | None, config: CartoonizeServing,
               shrink: Shrink, faces_of: Callable[[np.ndarray], list[Face]]) -> Serve:
    """What a published version answers, from its ONNX graphs (as the API runs them)."""
    main = cpu_session(model_file)
    if head_file is None:
        def run(x: np.ndarray) -> np.ndarray:
            out: np.ndarray = main.run(None, {"image": x})[0]
            return out
        return plain_serve(run, config, shrink.long_side or config.max_side)
    head = cpu_session(head_file)

    def run_bg(bgr: np.ndarray) -> np.ndarray:
        out: np.ndarray = graph_output(main.run(None, {"image": graph_input(bgr)})[0])[0]
        return out

    def run_heads(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cartoon, mask = head.run(None, {"image": graph_input(crops)})
        return graph_output(cartoon), np.asarray(mask[0, 0], np.float32)
    return compound_serve(run_bg, run_heads, shrink, faces_of)


# -- scoring --------------------------------------------------------------------------------


def _signed(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(rgb, np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


def served_metrics(serve: Serve, pairs: Iterable[tuple[Path, Path]], shrink: Shrink,
                   faces_of: Callable[[np.ndarray], list[Face]], ssim_weight: float
                   ) -> dict[str, float]:
    """Served answer vs cartoon over ``pairs``: loss (L1 + ssim_weight * (1 - SSIM)),
    l1, ssim, psnr on [-1, 1]; faces (how many the face stage finds in all) and face_l1
    (L1 inside their boxes) where there are any."""
    l1, ss, ps, face_l1 = Mean(), Mean(), Mean(), Mean()
    faces = 0
    for photo_path, cartoon_path in pairs:
        photo, cartoon = load_pair(photo_path, cartoon_path)
        out = _signed(serve(photo))
        target = _signed(cartoon)
        l1.add((out - target).abs().mean(), 1)
        ss.add(ssim(out, target, data_range=2.0), 1)
        ps.add(psnr(out, target, data_range=2.0).mean(), 1)
        small = shrink(photo)
        sx, sy = photo.shape[1] / small.shape[1], photo.shape[0] / small.shape[0]
        for face in faces_of(small):
            x, y, w, h = face.box
            x0, y0 = max(int(x * sx), 0), max(int(y * sy), 0)
            x1 = min(int((x + w) * sx) + 1, photo.shape[1])
            y1 = min(int((y + h) * sy) + 1, photo.shape[0])
            if x1 > x0 and y1 > y0:
                region = (out - target)[..., y0:y1, x0:x1]
                face_l1.add(region.abs().mean(), 1)
                faces += 1
    metrics = {"loss": l1.value() + ssim_weight * (1 - ss.value()), "l1": l1.value(),
               "ssim": ss.value(), "psnr": ps.value(), "faces": float(faces)}
    if faces:
        metrics["face_l1"] = face_l1.value()
    return metrics


def cached_faces(limits: DetectLimits) -> Callable[[np.ndarray], list[Face]]:
    """The face stage, remembering the last image it saw: scoring looks for the faces of a
    photo once for the served answer and once for the face boxes."""
    last: dict[str, tuple[bytes, list[Face]]] = {}

    def faces_of(small: np.ndarray) -> list[Face]:
        key = small.tobytes()
        hit = last.get("image")
        if hit is not None and hit[0] == key:
            return hit[1]
        found = _faces(small, limits)
        last["image"] = (key, found)
        return found
    return faces_of
