"""Procedural drawing for the synthetic datasets, and ``make_dataset`` for any task.

A family's ``synthetic`` maker (its spec's, in its folder) draws its dataset in its upload
layout from these pieces: gradients, noisy shapes, scenes, cartoon faces. They let tests and
the starter models train end-to-end without any download; each maker is deterministic given
its seed, and each target is a real function of the input a network can learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
CLASS_COLOURS = ((220, 40, 40), (40, 170, 40), (40, 60, 220), (220, 200, 30), (200, 40, 200),
                 (30, 200, 200))


def colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A two-colour linear gradient."""
    a, b = np.array(colour(rng)), np.array(colour(rng))
    t = np.linspace(0, 1, size)[:, None, None]
    grad = a * (1 - t) + b * t
    img = np.broadcast_to(grad, (size, size, 3)) if rng.random() < 0.5 else \
        np.broadcast_to(grad.transpose(1, 0, 2), (size, size, 3))
    return Image.fromarray(np.ascontiguousarray(img).astype(np.uint8))


def box(rng: np.random.Generator, size: int, lo: float, hi: float) -> list[int]:
    w = int(size * rng.uniform(lo, hi))
    x, y = (int(v) for v in rng.integers(0, max(1, size - w), 2))
    return [x, y, x + w, y + w]


def shape(draw: ImageDraw.ImageDraw, kind: str, box: list[int],
           fill: float | tuple[int, ...] | str) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif kind == "cross":
        t = w / 6
        draw.rectangle([cx - t, y0, cx + t, y1], fill=fill)
        draw.rectangle([x0, cy - t, x1, cy + t], fill=fill)
    else:  # ring
        draw.ellipse(box, outline=fill, width=max(2, int(w / 6)))


def noisy(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def scene(rng: np.random.Generator, size: int) -> Image.Image:
    img = background(rng, size)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        shape(draw, str(rng.choice(CLASS_SHAPES[:4])), box(rng, size, 0.2, 0.5), colour(rng))
    return img


def face(rng: np.random.Generator, size: int) -> Image.Image:
    """A cartoon face: coloured background, skin ellipse, hair cap, two eyes and a mouth."""
    img = Image.new("RGB", (size, size), colour(rng, 120, 256))
    d = ImageDraw.Draw(img)
    s = size / 64
    cx, cy = size / 2 + rng.uniform(-4, 4) * s, size / 2 + rng.uniform(-3, 3) * s
    rx, ry = rng.uniform(17, 23) * s, rng.uniform(20, 26) * s
    d.ellipse([cx - rx - 3 * s, cy - ry - 5 * s, cx + rx + 3 * s, cy + 4 * s],
              fill=colour(rng, 0, 160))  # hair
    skin = (int(rng.integers(220, 256)), int(rng.integers(180, 220)), int(rng.integers(150, 200)))
    d.ellipse([cx - rx, cy - ry * 0.6, cx + rx, cy + ry], fill=skin)
    eye = colour(rng, 0, 200)
    er = rng.uniform(3, 5) * s
    for sx in (-1, 1):
        ex, ey = cx + sx * rx * 0.45, cy + ry * 0.1
        d.ellipse([ex - er, ey - er * 1.3, ex + er, ey + er * 1.3], fill=eye)
    d.line([cx - 4 * s, cy + ry * 0.6, cx + 4 * s, cy + ry * 0.6], fill=(150, 40, 40),
           width=max(1, int(2 * s)))
    return img


def make_faces(root: Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    """``images/*.png`` of cartoon faces (generate: size 96; autoencode: size 64)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        face(rng, size).save(root / "images" / f"{i:04d}.png")
    return root


def make_dataset(task: str, root: Path, seed: int = 0, **sizes: int) -> Path:
    """The synthetic dataset of ``task`` in ``root`` (``sizes`` go to the spec's maker)."""
    from tasks.registry import get_task

    maker = get_task(task).synthetic
    if maker is None:
        raise ValueError(f"task {task!r} has no synthetic dataset maker")
    return maker(Path(root), seed=seed, **sizes)
