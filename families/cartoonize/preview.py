"""The small preview every cartoonize version gets when it is published: the shipped
portrait (data/portrait.jpg, public domain) through the version's own graphs, as the API
would serve it (the compound steps when the version has a head graph), shrunk to
``PREVIEW_SIDE`` and JPEG-encoded. Torch-free: onnxruntime, numpy, Pillow and the face
stage; the worker runs it on the graphs it has just exported and proven."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from faces import detect
from families.cartoonize.compound import (
    SHORT_SIDE,
    cartoonize_compound,
    graph_input,
    graph_output,
)

PHOTO = Path(__file__).resolve().parent / "data" / "portrait.jpg"
PREVIEW_SIDE = 128


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def make_preview(directory: Path, graphs: Mapping[str, Any], config: Mapping[str, Any]
                 ) -> bytes:
    """JPEG bytes of the portrait cartoonized by the graphs in ``directory``
    (``graphs``: role -> the manifest's graph entry, with ``file``)."""
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    main = _session(directory / graphs["main"].file)

    def run_bg(bgr: np.ndarray) -> np.ndarray:
        out: np.ndarray = graph_output(main.run(None, {"image": graph_input(bgr)})[0])[0]
        return out

    run_heads = None
    if "head" in graphs:
        head = _session(directory / graphs["head"].file)

        def run_heads(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cartoon, mask = head.run(None, {"image": graph_input(crops)})
            return graph_output(cartoon), np.asarray(mask[0, 0], np.float32)

    def find(image: np.ndarray) -> tuple[list[Any], int]:
        found = detect(Image.fromarray(image))
        return found, len(found)

    result = cartoonize_compound(rgb, run_bg, run_heads, find,
                                 short_side=int(config.get("short_side") or SHORT_SIDE))
    preview = Image.fromarray(result.image)
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
