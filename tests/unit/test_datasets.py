"""Dataset layouts, pairing, deterministic splits, paired augmentation, synthetic data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from worker.training import augment as A
from worker.training.datasets import (
    DatasetError,
    PairedImages,
    cartoonize_splits,
    classify_splits,
    image_splits,
    list_images,
    matte_splits,
    pair_by_stem,
    split_off,
    stratified_split,
)
from worker.training.synthetic import make_dataset


def _img(path: Path, colour=(255, 0, 0), size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path)
    return path


def test_pairs_match_by_stem_and_unmatched_are_reported(tmp_path):
    photo, cartoon = tmp_path / "train" / "photo", tmp_path / "train" / "cartoon"
    for stem in ("a", "b", "c", "only_photo"):
        _img(photo / f"{stem}.jpg")
    for stem in ("a", "b", "c", "only_cartoon"):
        _img(cartoon / f"{stem}.png")  # extensions may differ: the stem decides
    (photo / "notes.txt").write_text("not an image")
    pairing = pair_by_stem(photo, cartoon)
    assert [(a.name, b.name) for a, b in pairing.pairs] == [
        ("a.jpg", "a.png"), ("b.jpg", "b.png"), ("c.jpg", "c.png")]
    assert sorted(p.name for p in pairing.unmatched) == ["only_cartoon.png", "only_photo.jpg"]
    splits = cartoonize_splits(tmp_path)
    assert len(splits.train) + len(splits.val) == 3 and len(splits.val) == 1
    assert sorted(p.name for p in splits.unmatched) == ["only_cartoon.png", "only_photo.jpg"]
    assert splits.summary()["unmatched"]


def test_explicit_val_split_is_used(tmp_path):
    for stem in "abcd":
        _img(tmp_path / "images" / f"{stem}.png")
        _img(tmp_path / "masks" / f"{stem}.png", mode="L")
    for stem in "xy":
        _img(tmp_path / "val" / "images" / f"{stem}.png")
        _img(tmp_path / "val" / "masks" / f"{stem}.png", mode="L")
    splits = matte_splits(tmp_path)
    assert [a.stem for a, _ in splits.train] == list("abcd")
    assert [a.stem for a, _ in splits.val] == list("xy")


def test_missing_layout_is_an_explicit_error(tmp_path):
    with pytest.raises(DatasetError, match="no pairs"):
        cartoonize_splits(tmp_path)
    _img(tmp_path / "only" / "x.png")
    with pytest.raises(DatasetError, match="2 class folders"):
        classify_splits(tmp_path)
    with pytest.raises(DatasetError, match="at least 2 images"):
        image_splits(tmp_path)


def test_list_images_filters_extensions(tmp_path):
    for name in ("a.PNG", "b.jpeg", "c.webp", "d.bmp", "e.gif", ".hidden.png", "f.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpeg", "c.webp", "d.bmp"]


def test_stratified_8_1_1_split_is_deterministic(tmp_path):
    items = [(Path(f"c{c}/{i}.png"), c) for c in range(3) for i in range(20 if c else 10)]
    train, val, test = stratified_split(items, seed=7)
    assert (train, val, test) == stratified_split(items, seed=7)
    assert stratified_split(items, seed=8) != (train, val, test)
    for c, n in ((0, 10), (1, 20), (2, 20)):
        counts = [sum(1 for _, y in part if y == c) for part in (train, val, test)]
        assert counts == [n * 8 // 10, n // 10, n // 10]
    all_paths = [p for part in (train, val, test) for p, _ in part]
    assert len(all_paths) == len(set(all_paths)) == len(items)


def test_small_classes_still_get_val_and_test():
    items = [(Path(f"a/{i}.png"), 0) for i in range(3)] + [(Path("b/0.png"), 1)]
    train, val, test = stratified_split(items, seed=0)
    assert (len(train), len(val), len(test)) == (2, 1, 1)  # class b (1 image) trains only


def test_classify_layouts(tmp_path):
    root = make_dataset("classify", tmp_path / "flat", per_class=10, classes=3)
    splits = classify_splits(root, seed=0)
    assert splits.classes == ["class_circle", "class_square", "class_triangle"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 3, 3)
    assert classify_splits(root, seed=0).val == splits.val
    nested = tmp_path / "nested"
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _img(nested / split / cls / f"{i}.png")
    _img(nested / "val" / "bird" / "0.png")  # a val class the train split does not have
    s = classify_splits(nested)
    assert s.classes == ["cat", "dog"] and len(s.train) == 8 and len(s.val) == 4
    assert s.test == [] and [p.name for p in s.unmatched] == ["0.png"]


def test_val_fraction_split():
    train, val = split_off(list(range(30)), seed=1)
    assert len(val) == 3 and sorted(train + val) == list(range(30))
    assert split_off(list(range(30)), seed=1) == (train, val)
    assert len(split_off([1, 2], seed=0)[1]) == 1  # at least one val item


def test_paired_augmentation_keeps_pairs_aligned():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 50, 70, generator=g)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        a, b = A.hflip(A.scale_crop(A.color_jitter([img, img.clone()], 0.1, gen), 32,
                                    (0.9, 1.1), gen), 0.5, gen)
        assert a.shape == (3, 32, 32) and torch.equal(a, b)
    gen1, gen2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(A.scale_crop([img], 32, (0.9, 1.1), gen1)[0],
                       A.scale_crop([img], 32, (0.9, 1.1), gen2)[0])


def test_paired_dataset_keys(tmp_path):
    root = make_dataset("matte", tmp_path, n=4, size=32)
    splits = matte_splits(root)

    def transform(image, mask, gen):
        t = [A.to_tensor(image), A.to_tensor(mask)]
        return tuple(A.random_crop(t, 16, gen)) if gen is not None else tuple(t)

    ds = PairedImages(splits.train, transform, second_is_mask=True)
    image, mask = ds[0]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    x1, _ = ds[(0, 42)]
    x2, _ = ds[(0, 42)]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2)


@pytest.mark.parametrize("task", ["cartoonize", "matte", "classify", "generate", "autoencode"])
def test_synthetic_datasets_are_deterministic(tmp_path, task):
    kw = {"per_class": 3} if task == "classify" else {"n": 3}

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        return h.hexdigest()

    a = make_dataset(task, tmp_path / "a", seed=5, **kw)
    b = make_dataset(task, tmp_path / "b", seed=5, **kw)
    c = make_dataset(task, tmp_path / "c", seed=6, **kw)
    assert digest(a) == digest(b) != digest(c)
