"""A portrait fine-tune on real photos learns a drawing style and serves it.

The pairs are crops of scikit-image's astronaut, chelsea and coffee photos, drawn by a fixed
pencil filter (``families.portrait.synthetic.pencil``). The held-out crops come from parts
of the photos no training crop covers; the served drawings (``POST /portrait?crop=none``)
must be closer to their pencil drawings than the blank page and an edge detector's lines.
Also: the APDrawingGAN side-by-side layout trains like the folders, the INT8 variant goes
through the generic machinery, and each epoch writes a sample sheet.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data

import families.portrait.trainer  # noqa: F401  (registers the trainer and the nets)
from families.portrait.spec import PortraitHyperparameters
from families.portrait.synthetic import pencil
from model_store.manifest import Lineage
from model_store.store import ModelStore
from tests.support.server import ApiServer
from worker.training.publish import publish_version
from worker.training.trainers import get_trainer
from worker.training.trainers.context import TrainContext

pytestmark = [pytest.mark.slow, pytest.mark.local_store_only("publishes into a directory")]

CROP = 96
PHOTOS = ("astronaut", "chelsea", "coffee")


def _crops(image: np.ndarray, held_out: bool) -> list[np.ndarray]:
    """Training crops overlap (stride half a crop) in the left three quarters of the photo;
    the held-out ones tile its right quarter, which no training crop reaches."""
    height, width = image.shape[:2]
    cut = int(width * 0.75)
    step = CROP if held_out else CROP // 2
    xs = range(cut, width - CROP + 1, CROP) if held_out else range(0, cut - CROP + 1, step)
    return [image[y:y + CROP, x:x + CROP] for y in range(0, height - CROP + 1, step)
            for x in xs]


def _save_pair(root: Path, name: str, photo: Image.Image, side_by_side: bool) -> None:
    if side_by_side:
        pair = Image.new("RGB", (2 * CROP, CROP))
        pair.paste(photo, (0, 0))
        pair.paste(pencil(photo).convert("RGB"), (CROP, 0))
        (root / "train").mkdir(parents=True, exist_ok=True)
        pair.save(root / "train" / f"{name}.png")
        return
    for sub, picture in (("photo", photo), ("drawing", pencil(photo))):
        (root / sub).mkdir(parents=True, exist_ok=True)
        picture.save(root / sub / f"{name}.png")


def _make(root: Path, side_by_side: bool) -> list[np.ndarray]:
    """Training pairs under ``root``, the held-out ones under ``root/val`` (folders) or
    ``root/test`` (side by side); returns the held-out photo crops."""
    held = []
    for name in PHOTOS:
        photo = getattr(data, name)()
        for i, crop in enumerate(_crops(photo, held_out=False)):
            _save_pair(root, f"{name}_{i:03d}", Image.fromarray(crop), side_by_side)
        for i, crop in enumerate(_crops(photo, held_out=True)):
            if side_by_side:
                _save_pair(root / "test", f"{name}_{i:03d}", Image.fromarray(crop), True)
                (root / "test" / "train" / f"{name}_{i:03d}.png").rename(
                    root / "test" / f"{name}_{i:03d}.png")
            else:
                _save_pair(root / "val", f"{name}_{i:03d}", Image.fromarray(crop), False)
            held.append(crop)
    return held


def _mae(drawing: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(drawing.astype(np.float64) - target.astype(np.float64)))) / 255


def _edge_lines(photo: np.ndarray) -> np.ndarray:
    edges = np.asarray(Image.fromarray(photo).convert("L").filter(ImageFilter.FIND_EDGES),
                       np.float64)
    return 255.0 * (1.0 - edges / max(edges.max(), 1.0))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_side_by_side_pairs_split_in_halves(tmp_path: Path) -> None:
    held = _make(tmp_path, side_by_side=True)
    trainer = get_trainer("portrait")
    hp = PortraitHyperparameters(size=32)
    splits, loader, _ = trainer._loader_for(tmp_path, hp, None, "val")
    assert len(splits.val) == len(held)  # test/ is the held-out split
    image, drawing, _ = next(iter(loader))
    # the right half (the pencil drawing) is mostly white paper
    assert float(drawing.mean()) > 0.7
    assert image.shape[-2:] == drawing.shape[-2:] == (32, 32)


def test_fine_tune_serves_drawings_that_beat_trivial_ones(tmp_path: Path) -> None:
    held = _make(tmp_path / "data", side_by_side=False)
    hp = PortraitHyperparameters(epochs=5, batch_size=4, size=48, samples_per_epoch=2)
    trainer = get_trainer("portrait")
    result = trainer.train(TrainContext(dataset_dir=tmp_path / "data", work_dir=tmp_path / "w",
                                        hyperparameters=hp, arch="u2netp",
                                        device=torch.device("cpu")))
    trivial = trainer.trivial_metric(tmp_path / "data", hp)
    assert trivial is not None and result.metrics["drawing_mae"] < trivial
    sheets = sorted((tmp_path / "w" / "samples").glob("portrait_epoch_*.png"))
    assert len(sheets) == 5
    with Image.open(sheets[-1]) as sheet:  # rows of drawing, mask-style d1, photo, target
        assert sheet.width > 4 * 48 and sheet.height > 2 * 48

    store = ModelStore(tmp_path / "store", create=True)
    manifest = publish_version(
        store, model_name="portrait", arch_name="u2netp", module=result.module,
        lineage=Lineage(source="finetune"), hyperparameters=hp, activate=True,
        calibration_dataset=tmp_path / "data", int8=True, task="portrait")
    assert manifest.task == "portrait" and manifest.preprocessing["size"] == 48
    assert manifest.parity.passed
    assert "int8" in manifest.variants  # kept or refused, with its measured fidelity

    server = ApiServer(tmp_path / "store", tmp_path / "api.log")
    ours, blank, edges = [], [], []
    try:
        with server.client(timeout=300) as client:
            for crop in held:
                buf = io.BytesIO()
                Image.fromarray(crop).save(buf, "PNG")
                r = client.post("/portrait", params={"crop": "none", "precision": "fp32"},
                                content=buf.getvalue(), headers={"content-type": "image/png"})
                assert r.status_code == 200, r.text
                drawing = np.asarray(Image.open(io.BytesIO(r.content)))
                target = np.asarray(pencil(Image.fromarray(crop)))
                assert drawing.shape == target.shape
                ours.append(_mae(drawing, target))
                blank.append(_mae(np.full_like(target, 255), target))
                edges.append(_mae(_edge_lines(crop), target))
    finally:
        server.stop()
    assert np.mean(ours) < np.mean(blank) and np.mean(ours) < np.mean(edges), (
        np.mean(ours), np.mean(blank), np.mean(edges))
