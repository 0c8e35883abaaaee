"""classify's synthetic class folders: the class is the big shape's kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ImageDraw

from tasks.synthetic import CLASS_COLOURS, CLASS_SHAPES, background, box, noisy, shape


def make_classify(root: Path, per_class: int = 10, classes: int = 3, size: int = 64,
                  seed: int = 0) -> Path:
    """One folder per class (``class_circle``, ...): the class is the big shape's kind, and
    each class has its own colour family so a few epochs can learn it."""
    rng = np.random.default_rng(seed)
    if not 2 <= classes <= len(CLASS_SHAPES):
        raise ValueError(f"classes must be in [2, {len(CLASS_SHAPES)}]")
    for c, kind in enumerate(CLASS_SHAPES[:classes]):
        folder = root / f"class_{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array(CLASS_COLOURS[c])
        for i in range(per_class):
            img = noisy(background(rng, size), rng, 10.0)
            colour = tuple(int(v) for v in np.clip(base + rng.integers(-30, 31, 3), 0, 255))
            shape(ImageDraw.Draw(img), kind, box(rng, size, 0.45, 0.75), colour)
            img.save(folder / f"{i:04d}.png")
    return root
