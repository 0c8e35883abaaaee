"""What an INT8 variant is calibrated and judged on: the images (a fine-tune's validation
images or the photos shipped in ``calibration/``, each in four views) and the graph inputs
the family's own serving recipe makes of them (worker/training/quantize.py uses them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from model_store.manifest import GraphSpec
from tasks import TaskSpec, get_task

if TYPE_CHECKING:
    from worker.training.datasets import DatasetSource

log = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).parent / "calibration"
# Most validation images used (half calibrate, half are held out); each adds its mirror.
MAX_DATASET_IMAGES = 16
DRAWN_SAMPLES = 16  # a graph fed no image: drawn inputs to calibrate, as many held out

Feeds = dict[str, np.ndarray]


class CalibrationUnavailable(ValueError):
    """No calibration inputs can be made for this task (the message says why)."""


# ---------------------------------------------------------------- calibration images
def shipped_photos() -> list[Image.Image]:
    """The real photos shipped for imports (calibration/README.md: public domain / CC0)."""
    photos = []
    for path in sorted(CALIBRATION_DIR.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return photos


def dataset_images(dataset_dir: DatasetSource, task: str, limit: int = MAX_DATASET_IMAGES
                   ) -> list[Image.Image]:
    """The primary images of a dataset's validation split (the layout's first key)."""
    from worker.training.datasets import load_splits  # torch: only on the fine-tune path

    splits = load_splits(dataset_dir, task)
    key = get_task(task).layout.sample_keys[0]
    images = []
    for sample in (splits.val or splits.test)[:limit]:
        with Image.open(sample[key]) as image:
            images.append(image.convert("RGB"))
    return images


def _views(image: Image.Image) -> list[Image.Image]:
    """Four inputs per image, as served requests could send them: the photo, its mirror,
    and the two of a centred crop of 3/4 of each side (another framing and scale)."""
    width, height = image.size
    left, top = width // 8, height // 8
    crop = image.crop((left, top, left + width * 3 // 4, top + height * 3 // 4))
    return [image, ImageOps.mirror(image), crop, ImageOps.mirror(crop)]


@dataclass
class ImageSets:
    calibration: list[Image.Image]
    held_out: list[Image.Image]
    source: str


def image_sets(dataset_dir: DatasetSource | None, task: str) -> ImageSets:
    """Calibration and held-out images: the dataset's validation images (alternately; the
    shipped photos are added when it has fewer than four), or the shipped photos."""
    images: list[Image.Image] = []
    source = ""
    if dataset_dir is not None:
        try:
            images = dataset_images(dataset_dir, task)
            source = f"{len(images)} validation images of the fine-tune's dataset"
        except Exception as exc:  # a dataset without val images still gets the photos
            log.warning("no validation images for calibration (%s); using shipped photos", exc)
    if len(images) < 4:
        photos = shipped_photos()
        images += photos
        source = (f"{source} + " if source else "") + f"{len(photos)} shipped photos"
    calibration = [v for image in images[0::2] for v in _views(image)]
    held_out = [v for image in images[1::2] for v in _views(image)]
    return ImageSets(calibration, held_out,
                     f"{source}, 4 views each (mirror, 3/4 crop); alternate images held out")


# ---------------------------------------------------------------- inputs per task
def within(image: Image.Image, side: int) -> Image.Image:
    """``image`` with its long side at most ``side`` (aspect kept)."""
    if max(image.size) <= side:
        return image
    return ImageOps.contain(image, (side, side), Image.Resampling.BILINEAR)


def takes_any_size(graph: GraphSpec) -> bool:
    """Whether the graph's first input has a symbolic spatial axis (it takes any size)."""
    shape = graph.inputs[0].shape if graph.inputs else []
    return any(not isinstance(d, int) or d <= 0 for d in shape[-2:])


def main_feeds(spec: TaskSpec, config: Mapping[str, Any], images: Sequence[Image.Image],
               seed: int) -> list[Feeds]:
    """Batch-1 inputs of the main graph, made by the family's own serving recipe: each image
    prepared as the API prepares an upload, or (a graph fed no image) inputs drawn as a
    seeded request draws them."""
    typed = spec.serving.model_validate(dict(config))
    prepare = spec.image_prepare
    if prepare is not None:
        return [{k: np.asarray(v) for k, v in prepare(image, typed).items()}
                for image in images]
    if spec.drawn_inputs is not None:
        rng = np.random.default_rng(seed)
        return [{k: np.asarray(v) for k, v in spec.drawn_inputs(typed, rng).items()}
                for _ in range(DRAWN_SAMPLES)]
    raise CalibrationUnavailable(f"no calibration inputs are known for task {spec.name!r}"
                                 " (it declares neither image nor drawn inputs)")


def role_feeds(spec: TaskSpec, role: str, main_outputs: list[Feeds]) -> list[Feeds]:
    """A graph other than main is fed what the main graph gives (autoencode's decoder takes
    the encoder's latents), so it calibrates on the values it serves."""
    inputs = spec.graphs[role].inputs
    missing = [name for name in inputs if name not in main_outputs[0]]
    if missing:
        raise CalibrationUnavailable(f"the {role} graph's inputs {missing} are not outputs of"
                                     " the main graph: no calibration inputs for it")
    return [{name: out[name] for name in inputs} for out in main_outputs]
