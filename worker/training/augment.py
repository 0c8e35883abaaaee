"""Image transforms for training, written with torch and PIL (no torchvision).

Every random transform takes an explicit ``torch.Generator`` (or None: no randomness) and
applies the *same* draw to every image of a pair, so photo/cartoon and image/mask stay
aligned. Tensors are float CHW in [0, 1] unless said otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL (RGB or L) -> float CHW in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_pil(t: torch.Tensor) -> Image.Image:
    """float CHW in [0, 1] (1 or 3 channels) -> PIL."""
    arr = (t.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of CHW to (h, w)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return functional.interpolate(t[None], size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def resize_shorter(t: torch.Tensor, shorter: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    scale = shorter / min(h, w)
    return resize(t, (max(shorter, round(h * scale)), max(shorter, round(w * scale))))


def center_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return t[..., top:top + size, left:left + size]


def random_crop(ts: list[torch.Tensor], size: int, gen: torch.Generator) -> list[torch.Tensor]:
    h, w = ts[0].shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return [t[..., top:top + size, left:left + size] for t in ts]


def hflip(ts: list[torch.Tensor], prob: float, gen: torch.Generator) -> list[torch.Tensor]:
    if float(torch.rand((), generator=gen)) < prob:
        return [t.flip(-1) for t in ts]
    return ts


def _gray(t: torch.Tensor) -> torch.Tensor:
    return (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]


def color_jitter(
    ts: list[torch.Tensor], amount: float, gen: torch.Generator
) -> list[torch.Tensor]:
    """Brightness, contrast and saturation factors in [1-amount, 1+amount], same for all."""
    if amount <= 0:
        return ts
    b, c, s = (uniform(gen, 1 - amount, 1 + amount) for _ in range(3))
    out = []
    for t in ts:
        t = (t * b).clamp(0, 1)
        t = (c * t + (1 - c) * _gray(t).mean()).clamp(0, 1)
        t = (s * t + (1 - s) * _gray(t)).clamp(0, 1)
        out.append(t)
    return out


def scale_crop(
    ts: list[torch.Tensor], size: int, scale: tuple[float, float], gen: torch.Generator
) -> list[torch.Tensor]:
    """Resize the shorter side to ``size * s`` (s uniform in ``scale``), reflect-pad when that
    is smaller than ``size``, then take one random ``size`` x ``size`` crop of all images."""
    s = uniform(gen, *scale)
    shorter = max(1, round(size * s))
    out = []
    for t in ts:
        t = resize_shorter(t, shorter)
        pad_h, pad_w = max(0, size - t.shape[-2]), max(0, size - t.shape[-1])
        if pad_h or pad_w:
            mode = "reflect" if min(t.shape[-2:]) > max(pad_h, pad_w) else "replicate"
            padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            t = functional.pad(t[None], padding, mode=mode)[0]
        out.append(t)
    return random_crop(out, size, gen)


def square(t: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop the shorter side then resize to ``size`` x ``size`` (DCGAN/AE inputs)."""
    return resize(center_crop(t, min(t.shape[-2:])), (size, size))


def imagenet_normalize(t: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


def imagenet_denormalize(t: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=t.device).view(-1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=t.device).view(-1, 3, 1, 1)
    return t * std + mean


def save_grid(rows: list[list[torch.Tensor]], path: Path, pad: int = 2) -> Path:
    """Write rows of CHW images in [0, 1] (1 or 3 channels, any sizes) as one PNG."""
    tiles = [[t.detach().float().cpu().expand(3, *t.shape[-2:]) for t in row] for row in rows]
    cell_h = max(t.shape[-2] for row in tiles for t in row)
    cell_w = max(t.shape[-1] for row in tiles for t in row)
    ncol = max(len(row) for row in tiles)
    canvas = torch.ones(3, len(tiles) * (cell_h + pad) + pad, ncol * (cell_w + pad) + pad)
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            top, left = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
            canvas[:, top:top + t.shape[-2], left:left + t.shape[-1]] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(canvas).save(path)
    return path
