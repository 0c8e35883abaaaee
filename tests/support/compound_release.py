"""A DCT-Net style release folder as ModelScope lays it out, with test-made weights:
``cartoon_bg.pb`` and ``cartoon_h.pb`` (frozen generators, tests/support/tf_graphs.py) and
``alpha.jpg`` (the head's blend mask), and the same generators as the authors' graphs
behave (BGR 0..255 in, 8-bit BGR out), for the reference implementation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import faces
from tests.support.checkpoints import make_official_checkpoint
from tests.support.tf_graphs import npz_variables, write_frozen_generator


def write_release(folder: Path, *, bg_seed: int = 1, head_seed: int = 2,
                  names: tuple[str, str] = ("cartoon_bg.pb", "cartoon_h.pb")) -> Path:
    """The release folder: both frozen generators and alpha.jpg (a feathered ellipse)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in zip((bg_seed, head_seed), names, strict=True):
        npz = make_official_checkpoint("dctnet", folder / f"vars-{seed}", seed=seed)[""]
        write_frozen_generator(npz_variables(npz), folder / name)
    alpha = np.clip(np.rint(faces.soft_mask() * 255), 0, 255).astype(np.uint8)
    Image.fromarray(alpha).save(folder / "alpha.jpg", quality=95)
    return folder


def generator_npz(folder: Path, seed: int) -> Path:
    """The TF variables a release folder's generator of ``seed`` was written from."""
    return folder / f"vars-{seed}" / "dctnet_generator.npz"


def authors_graph(npz: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The generator in the released graph's contract, run in PyTorch: BGR 0..255 (HxWx3 or
    NxHxWx3) / 127.5 - 1, the DCT-Net forward (guided filter, clip), then
    ``uint8((clip(y, -0.999999, 0.999999) + 1) * 127.5)``."""
    from families.cartoonize.net import dctnet, load_tf_variables

    model = load_tf_variables(dctnet(), npz).eval()

    def run(bgr: np.ndarray) -> np.ndarray:
        batch = bgr[None] if bgr.ndim == 3 else bgr
        x = torch.from_numpy(np.asarray(batch, np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
        with torch.no_grad():
            y = model(x).clamp(-0.999999, 0.999999)
        out = ((y + 1) * 127.5).permute(0, 2, 3, 1).numpy().astype(np.uint8)
        return out[0] if bgr.ndim == 3 else out
    return run
