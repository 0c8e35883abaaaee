"""The compound fine-tune's pieces that need no HTTP: which job a request makes, the face
crops the head learns from, and the refusals that keep a job from training only one part
by accident (the end-to-end run is tests/integration/test_compound_finetune.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import families.cartoonize.trainer  # noqa: F401  (registers the trainer and the nets)
from families.cartoonize import compound_train
from families.cartoonize.compound_net import DCTNetCompound
from families.cartoonize.net import dctnet
from families.cartoonize.spec import SPEC, CartoonizeHyperparameters
from jobs.errors import InvalidJobRequest
from jobs.request_checks import validate_hyperparameters
from tests.support.portrait_pairs import astronaut_views
from worker.training.datasets import DatasetError
from worker.training.trainers import get_trainer
from worker.training.trainers.context import TrainContext


def test_a_compound_base_makes_a_job_of_both_generators() -> None:
    assert SPEC.fixed_by_base is not None
    compound = {"max_side": 720, "multiple_of": 4, "color_order": "BGR",
                "input_range": [-1, 1], "output_range": [-1, 1], "short_side": 720}
    assert SPEC.fixed_by_base(compound) == {"short_side": 720}
    assert SPEC.fixed_by_base({**compound, "short_side": None}) == {}
    inherited = validate_hyperparameters("cartoonize", {"short_side": 720})
    assert (inherited["parts"], inherited["short_side"]) == ("both", 720)
    head = validate_hyperparameters("cartoonize", {"short_side": 720, "parts": "head"})
    assert head["parts"] == "head"
    plain = validate_hyperparameters("cartoonize", {})
    assert (plain["parts"], plain["short_side"]) == (None, None)
    built = validate_hyperparameters("cartoonize", {"parts": "both"})
    assert built["short_side"] == 720
    with pytest.raises(InvalidJobRequest, match="parts='background' needs a compound base"):
        validate_hyperparameters("cartoonize", {"parts": "background"})
    with pytest.raises(InvalidJobRequest, match="trains on one device"):
        validate_hyperparameters("cartoonize", {"short_side": 720, "devices": 2})


def test_a_plain_base_starts_both_generators() -> None:
    base = dctnet().eval()
    model = compound_train.compound_of(base)
    for net in (model.background, model.head):
        for (name, a), b in zip(net.state_dict().items(), base.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), name


def _pair_folder(root: Path, photos: list[np.ndarray], cartoons: list[np.ndarray]) -> Path:
    for split in ("train", "val"):
        for kind, images in (("photo", photos), ("cartoon", cartoons)):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(root / split / kind / f"{i}.png")
    return root


def test_head_crops_cut_photo_and_cartoon_with_the_photos_alignment(tmp_path: Path) -> None:
    from faces import DetectLimits

    photo = astronaut_views(160)[1]
    blank = np.full_like(photo, 200)
    pairs = []
    for name, image in (("face", photo), ("blank", blank)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        # the "cartoon" is the photo turned negative: the same geometry, other pixels
        Image.fromarray(255 - image).save(tmp_path / f"{name}-toon.png")
        pairs.append((tmp_path / f"{name}.png", tmp_path / f"{name}-toon.png"))
    crops = compound_train.write_head_crops(pairs, tmp_path / "crops",
                                            compound_train.Shrink(720, None), DetectLimits())
    assert (crops.photos, crops.photos_with_faces, len(crops.pairs)) == (2, 1, 1)
    a = np.asarray(Image.open(crops.pairs[0][0]), np.int16)
    b = np.asarray(Image.open(crops.pairs[0][1]), np.int16)
    assert a.shape == (288, 288, 3)
    inside = (a != 255).any(axis=2)  # the white border outside the photo is not inverted
    assert inside.mean() > 0.5
    assert np.abs((a + b)[inside] - 255).max() <= 1


def _context(tmp_path: Path, data: Path, hp: CartoonizeHyperparameters, arch: str,
             base: torch.nn.Module | None) -> TrainContext:
    return TrainContext(dataset_dir=data, work_dir=tmp_path / "work", hyperparameters=hp,
                        arch=arch, base_module=base, device=torch.device("cpu"))


def test_refusals_name_what_would_go_untrained(tmp_path: Path) -> None:
    trainer = get_trainer("cartoonize")
    faces = astronaut_views(96)[:2]
    data = _pair_folder(tmp_path / "faces", faces, faces)
    hp = CartoonizeHyperparameters(epochs=1, batch_size=1, parts="head")
    with pytest.raises(ValueError, match="untrained background generator"):
        trainer.train(_context(tmp_path, data, hp, "dctnet-compound", None))
    bare = CartoonizeHyperparameters(epochs=1, batch_size=1)
    with pytest.raises(ValueError, match="give the hyper-parameter parts"):
        trainer.train(_context(tmp_path, data, bare, "dctnet-compound", DCTNetCompound()))

    scenes = [np.full((96, 96, 3), v, np.uint8) for v in (40, 120)]
    empty = _pair_folder(tmp_path / "no-faces", scenes, scenes)
    both = CartoonizeHyperparameters(epochs=1, batch_size=1, parts="both")
    with pytest.raises(DatasetError, match="the face stage found none in the 2 training"):
        trainer.train(_context(tmp_path, empty, both, "dctnet", dctnet()))
