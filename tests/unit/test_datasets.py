"""The worker reads the intake's split (index.json): pairing by stem, reported leftovers,
deterministic splits, stored vs raw folders, paired augmentation, synthetic data."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from model_store.dataset_scan import scan_dataset
from model_store.datasets import DatasetStore
from model_store.intake import ingest_upload
from tasks import get_task, task_specs
from tasks.synthetic import make_dataset
from worker.training import augment
from worker.training.datasets import (
    DatasetError,
    PairedImages,
    load_dataset,
    load_index,
    load_splits,
)

MAX_PIXELS = 40_000_000
SYNTHETIC = [spec.name for spec in task_specs() if spec.synthetic is not None]


@dataclass
class _IntakeSettings:
    dataset_max_entries: int = 10_000
    dataset_max_extracted_bytes: int = 1 << 30
    dataset_max_compression_ratio: float = 1000.0
    dataset_max_files: int = 10_000
    dataset_max_staging_bytes: int = 1 << 30
    dataset_report_max_items: int = 100
    max_pixels: int = MAX_PIXELS


def store_dataset(folder: Path, task: str, store: Path, dataset_id: str = "ds") -> Path:
    """Upload ``folder`` (zipped, with a wrapper folder like people make) through intake;
    returns ``<store>/datasets/<id>/``."""
    archive = folder.parent / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"upload/{p.relative_to(folder).as_posix()}")
    ingest_upload(store, task, archive, archive.name, _IntakeSettings(), dataset_id=dataset_id)
    return DatasetStore(store).path(dataset_id)


def _img(path: Path, colour=(255, 0, 0), size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path)
    return path


def _names(items) -> list[str]:
    return [p.name for p in items]


def test_pairs_match_by_stem_and_unmatched_are_reported(tmp_path):
    photo, cartoon = tmp_path / "train" / "photo", tmp_path / "train" / "cartoon"
    for stem in ("a", "b", "c", "only_photo"):
        _img(photo / f"{stem}.jpg")
    for stem in ("a", "b", "c", "only_cartoon"):
        _img(cartoon / f"{stem}.png")  # extensions may differ: the stem decides
    (photo / "notes.txt").write_text("not an image")
    splits = load_splits(tmp_path, "cartoonize")
    pairs = sorted((s["photo"], s["cartoon"]) for s in splits.train + splits.val)
    assert [(a.name, b.name) for a, b in pairs] == [
        ("a.jpg", "a.png"), ("b.jpg", "b.png"), ("c.jpg", "c.png")]
    assert len(splits.val) == 1 and splits.test == []
    # The leftovers are in the intake report, never silently used.
    reasons = {s.path: s.reason for s in splits.report.skipped}
    assert reasons["train/photo/only_photo.jpg"].startswith("no matching cartoon")
    assert reasons["train/cartoon/only_cartoon.png"].startswith("no matching photo")
    assert "train/photo/notes.txt" in reasons  # skipped, whatever the reason
    summary = splits.summary()
    assert (summary["train"], summary["val"]) == (2, 1)
    assert {s["path"] for s in summary["skipped"]} == set(reasons)


def test_explicit_val_split_is_used(tmp_path):
    for stem in "abcd":
        _img(tmp_path / "images" / f"{stem}.png")
        _img(tmp_path / "masks" / f"{stem}.png", mode="L")
    for stem in "xy":
        _img(tmp_path / "val" / "images" / f"{stem}.png")
        _img(tmp_path / "val" / "masks" / f"{stem}.png", mode="L")
    splits = load_splits(tmp_path, "matte")
    assert [s["image"].stem for s in splits.train] == list("abcd")
    assert [s["mask"].stem for s in splits.val] == list("xy")
    assert all(set(s) == {"image", "mask"} for s in splits.train + splits.val)
    assert splits.report.split_source == "given"


def test_a_layout_that_cannot_train_is_an_explicit_error(tmp_path):
    with pytest.raises(DatasetError, match="expected train/photo/"):
        load_index(tmp_path, "cartoonize")
    _img(tmp_path / "only" / "x.png")
    with pytest.raises(DatasetError, match="at least 2 are needed"):
        load_index(tmp_path, "classify")
    with pytest.raises(DatasetError, match="expected images/"):
        load_index(tmp_path, "generate")
    with pytest.raises(DatasetError, match="name the task"):
        load_index(tmp_path)  # a raw folder cannot say its own task
    with pytest.raises(DatasetError, match="does not exist"):
        load_index(tmp_path / "missing", "generate")


def test_files_that_are_not_images_are_skipped(tmp_path):
    for i in range(4):
        _img(tmp_path / "images" / f"{i}.png")
    for name in ("e.gif.txt", "f.txt", "g.png"):
        (tmp_path / "images" / name).write_bytes(b"x")
    index, root = load_index(tmp_path, "autoencode")
    assert root == tmp_path
    used = sorted(str(s["path"]) for samples in index.splits.values() for s in samples)
    assert used == [f"images/{i}.png" for i in range(4)]


def _classify_folder(root: Path, sizes: dict[str, int]) -> Path:
    for c, n in sizes.items():
        for i in range(n):
            _img(root / c / f"{i:02d}.png", colour=(10 * i, 0, 0))
    return root


def test_stratified_8_1_1_split_is_deterministic(tmp_path):
    sizes = {"c0": 10, "c1": 20, "c2": 20}
    a = load_splits(_classify_folder(tmp_path / "a", sizes), "classify")
    assert a.classes == ["c0", "c1", "c2"]
    for c, n in sizes.items():
        counts = [sum(1 for s in part if s["label"] == c) for part in (a.train, a.val, a.test)]
        assert counts == [n * 8 // 10, n // 10, n // 10]
    rel = [[s["path"].relative_to(a.data_root) for s in part]
           for part in (a.train, a.val, a.test)]
    flat = [p for part in rel for p in part]
    assert len(flat) == len(set(flat)) == sum(sizes.values())
    # Same files elsewhere (another host, another run): the very same split.
    b = load_splits(shutil.copytree(tmp_path / "a", tmp_path / "b"), "classify")
    assert rel == [[s["path"].relative_to(b.data_root) for s in part]
                   for part in (b.train, b.val, b.test)]
    assert a.index == b.index


def test_small_classes_still_get_val_and_test(tmp_path):
    s = load_splits(_classify_folder(tmp_path, {"a": 3, "b": 1}), "classify")
    assert (len(s.train), len(s.val), len(s.test)) == (2, 1, 1)  # class b (1 image) trains only
    assert [x["label"] for x in s.train].count("b") == 1


def test_classify_layouts(tmp_path):
    root = make_dataset("classify", tmp_path / "flat", per_class=10, classes=3)
    splits = load_splits(root, "classify")
    assert splits.classes == ["class_circle", "class_square", "class_triangle"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 3, 3)
    assert load_splits(root, "classify").val == splits.val
    nested = tmp_path / "nested"
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _img(nested / split / cls / f"{i}.png")
    _img(nested / "val" / "bird" / "0.png")  # a val class the train split does not have
    s = load_splits(nested, "classify")
    assert s.classes == ["cat", "dog"] and len(s.train) == 8 and len(s.val) == 4
    assert s.test == []
    assert [(k.path, k.reason) for k in s.report.skipped] == [
        ("val/bird/0.png", "class 'bird' has no train/bird/ folder")]


def test_val_fraction_split(tmp_path):
    root = make_dataset("autoencode", tmp_path / "data", n=30, size=16)
    splits = load_splits(root, "autoencode")
    assert len(splits.val) == 3 and len(splits.train) == 27
    assert sorted(s["path"] for s in splits.train + splits.val) == sorted(
        (root / "images").iterdir())
    assert load_splits(root, "autoencode").val == splits.val
    two = make_dataset("autoencode", tmp_path / "two", n=2, size=16)
    with pytest.raises(DatasetError, match="at least 4"):
        load_splits(two, "autoencode")  # below the intake's minimum


def test_stored_dataset_index_is_the_split(tmp_path):
    raw = make_dataset("classify", tmp_path / "raw", per_class=10, classes=2, size=32)
    stored = store_dataset(raw, "classify", tmp_path / "store")
    index_file = stored / "index.json"
    # The stored dataset and its data/ (what DatasetStore.data_dir gives) read index.json.
    for where in (stored, stored / "data"):
        index, root = load_index(where, "classify")
        assert root == stored / "data"
        assert index == DatasetStore(tmp_path / "store").index("ds")
    assert load_index(stored)[0].task == "classify"  # the index names its task
    # Whatever index.json says wins: no re-scan, no re-split.
    data = json.loads(index_file.read_text())
    moved = data["splits"]["train"][:3]
    data["splits"]["train"] = data["splits"]["train"][3:]
    data["splits"]["val"] = data["splits"]["val"] + moved
    index_file.write_text(json.dumps(data))
    splits = load_splits(stored, "classify")
    assert [s["path"].relative_to(splits.data_root).as_posix() for s in splits.val] == [
        s["path"] for s in data["splits"]["val"]]
    assert len(splits.train) == 20 - 2 - 2 - 3
    assert splits.report.counts == {"train": 16, "val": 2, "test": 2}  # report.json as stored
    _index, _root, report = load_dataset(stored / "data")
    assert report == splits.report


def test_stored_index_is_checked(tmp_path):
    raw = make_dataset("matte", tmp_path / "raw", n=4, size=16)
    stored = store_dataset(raw, "matte", tmp_path / "store")
    with pytest.raises(DatasetError, match="is a matte dataset, not cartoonize"):
        load_index(stored, "cartoonize")
    index_file = stored / "index.json"
    data = json.loads(index_file.read_text())
    data["splits"]["train"][0]["mask"] = "../../outside.png"
    index_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="bad 'mask'"):
        load_index(stored, "matte")
    index_file.write_text("{}")
    with pytest.raises(DatasetError, match="not a valid index"):
        load_index(stored, "matte")


def test_raw_scan_matches_the_intake(tmp_path):
    raw = make_dataset("cartoonize", tmp_path / "raw", n=12, size=16)
    stored = store_dataset(raw, "cartoonize", tmp_path / "store")
    assert load_index(raw, "cartoonize")[0] == load_index(stored)[0]
    report, index = scan_dataset(raw, get_task("cartoonize"), MAX_PIXELS)
    assert load_index(raw, "cartoonize")[0] == index and report.can_train


def test_paired_augmentation_keeps_pairs_aligned():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 50, 70, generator=g)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        jittered = augment.color_jitter([img, img.clone()], 0.1, gen)
        a, b = augment.hflip(augment.scale_crop(jittered, 32, (0.9, 1.1), gen), 0.5, gen)
        assert a.shape == (3, 32, 32) and torch.equal(a, b)
    gen1, gen2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(augment.scale_crop([img], 32, (0.9, 1.1), gen1)[0],
                       augment.scale_crop([img], 32, (0.9, 1.1), gen2)[0])


def test_paired_dataset_keys(tmp_path):
    root = make_dataset("matte", tmp_path, n=4, size=32)
    splits = load_splits(root, "matte")

    def transform(image, mask, gen):
        t = [augment.to_tensor(image), augment.to_tensor(mask)]
        return tuple(augment.random_crop(t, 16, gen)) if gen is not None else tuple(t)

    pairs = [(s["image"], s["mask"]) for s in splits.train]
    ds = PairedImages(pairs, transform, second_is_mask=True)
    image, mask = ds[0]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    x1, _ = ds[(0, 42)]
    x2, _ = ds[(0, 42)]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2)


@pytest.mark.parametrize("task", SYNTHETIC)
def test_synthetic_datasets_are_deterministic(tmp_path, task):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        return h.hexdigest()

    a = make_dataset(task, tmp_path / "a", seed=5)
    b = make_dataset(task, tmp_path / "b", seed=5)
    c = make_dataset(task, tmp_path / "c", seed=6)
    assert digest(a) == digest(b) != digest(c)


@pytest.mark.parametrize("task", SYNTHETIC)
def test_synthetic_datasets_pass_intake(tmp_path, task):
    root = make_dataset(task, tmp_path / "raw")
    report, _index = scan_dataset(root, get_task(task), MAX_PIXELS)
    assert report.can_train and not report.skipped
    # The worker reads the same samples, every path resolved under the data root.
    splits = load_splits(root, task)
    assert splits.train and splits.val
    for sample in splits.train + splits.val:
        paths = [v for k, v in sample.items() if k != "label"]
        assert paths and all(p.is_file() and p.is_relative_to(root) for p in paths)
