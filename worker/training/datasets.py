"""Dataset folder layouts -> file lists with deterministic splits -> torch Datasets.

Layouts (``root`` is the extracted upload):

- cartoonize: ``train/photo/*`` + ``train/cartoon/*`` (optional ``val/photo``, ``val/cartoon``)
- matte: ``images/*`` + ``masks/*`` (optional ``val/images``, ``val/masks``)
- classify: one folder per class at the root or under ``train/`` (optional ``val/``)
- generate, autoencode: ``images/*``

Pairs match by file stem; files without a partner are reported, not silently used. Splits are
seeded so a redelivered job sees exactly the same train/val files.

Train datasets take keys ``(index, aug_seed)``: each sample's augmentation draws from its own
``torch.Generator`` seeded per (epoch, position), so augmentation is the same whatever the
number of DataLoader workers and after a mid-epoch resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
VAL_FRACTION = 0.1

Key = int | tuple[int, int]


class DatasetError(ValueError):
    """The dataset folder does not have the layout the task needs."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted; hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def load_mask(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("L")


@dataclass
class Pairing:
    pairs: list[tuple[Path, Path]]
    unmatched: list[Path]  # files of either folder without a partner of the same stem


def pair_by_stem(a_dir: Path, b_dir: Path) -> Pairing:
    a = {p.stem: p for p in list_images(a_dir)}
    b = {p.stem: p for p in list_images(b_dir)}
    pairs = [(a[s], b[s]) for s in sorted(a.keys() & b.keys())]
    unmatched = sorted([a[s] for s in a.keys() - b.keys()] + [b[s] for s in b.keys() - a.keys()])
    return Pairing(pairs, unmatched)


def split_off(items: Sequence[Any], seed: int, fraction: float = VAL_FRACTION) -> tuple[list, list]:
    """Deterministic (train, val): ``fraction`` of the items (at least 1 when n >= 2) to val."""
    n = len(items)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * fraction)) if n >= 2 else 0
    val_idx = set(order[:n_val])
    return ([x for i, x in enumerate(items) if i not in val_idx],
            [x for i, x in enumerate(items) if i in val_idx])


def stratified_split(
    items: Sequence[tuple[Path, int]], seed: int, ratios: tuple[int, int, int] = (8, 1, 1)
) -> tuple[list, list, list]:
    """Per-class seeded 8:1:1 split; a class with >= 3 images gets at least one val and test."""
    out: tuple[list, list, list] = ([], [], [])
    total = sum(ratios)
    for label in sorted({y for _, y in items}):
        members = [it for it in items if it[1] == label]
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        n_val = max(1, round(n * ratios[1] / total)) if n >= 3 else 0
        n_test = max(1, round(n * ratios[2] / total)) if n >= 3 else 0
        out[1].extend(members[:n_val])
        out[2].extend(members[n_val:n_val + n_test])
        out[0].extend(members[n_val + n_test:])
    return tuple(sorted(part, key=lambda it: (it[1], str(it[0]))) for part in out)  # type: ignore[return-value]


@dataclass
class Splits:
    """File lists of one dataset: items are paths, (path, path) pairs or (path, label)."""

    train: list
    val: list
    test: list = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)
    classes: list[str] | None = None

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                "unmatched": [str(p) for p in self.unmatched], "classes": self.classes}


def _paired(root: Path, train: tuple[Path, Path], val: tuple[Path, Path], seed: int) -> Splits:
    tr = pair_by_stem(*train)
    if not tr.pairs:
        raise DatasetError(f"no pairs matched by file stem in {train[0]} and {train[1]}")
    va = pair_by_stem(*val)
    unmatched = tr.unmatched + va.unmatched
    if va.pairs:
        return Splits(tr.pairs, va.pairs, unmatched=unmatched)
    train_pairs, val_pairs = split_off(tr.pairs, seed)
    return Splits(train_pairs, val_pairs, unmatched=unmatched)


def cartoonize_splits(root: Path, seed: int = 0) -> Splits:
    return _paired(root, (root / "train" / "photo", root / "train" / "cartoon"),
                   (root / "val" / "photo", root / "val" / "cartoon"), seed)


def matte_splits(root: Path, seed: int = 0) -> Splits:
    return _paired(root, (root / "images", root / "masks"),
                   (root / "val" / "images", root / "val" / "masks"), seed)


def image_splits(root: Path, seed: int = 0) -> Splits:
    images = list_images(root / "images")
    if len(images) < 2:
        raise DatasetError(f"need at least 2 images in {root / 'images'}, found {len(images)}")
    train, val = split_off(images, seed)
    return Splits(train, val)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and list_images(d)) \
        if folder.is_dir() else []


def classify_splits(root: Path, seed: int = 0) -> Splits:
    """Labels are the sorted class folder names of the train split."""
    base = root / "train" if (root / "train").is_dir() else root
    dirs = [d for d in _class_dirs(base) if d.name not in {"train", "val", "test"}]
    if len(dirs) < 2:
        raise DatasetError(f"need at least 2 class folders with images in {base}")
    classes = [d.name for d in dirs]
    items = [(p, i) for i, d in enumerate(dirs) for p in list_images(d)]
    val_dir = root / "val"
    if base != root and val_dir.is_dir():
        index = {c: i for i, c in enumerate(classes)}
        val, unknown = [], []
        for d in _class_dirs(val_dir):
            (val.extend((p, index[d.name]) for p in list_images(d)) if d.name in index
             else unknown.extend(list_images(d)))
        return Splits(items, val, unmatched=unknown, classes=classes)
    train, val, test = stratified_split(items, seed)
    return Splits(train, val, test, classes=classes)


SPLITTERS: dict[str, Callable[[Path, int], Splits]] = {
    "cartoonize": cartoonize_splits,
    "matte": matte_splits,
    "classify": classify_splits,
    "generate": image_splits,
    "autoencode": image_splits,
}


def _generator(key: Key) -> tuple[int, torch.Generator | None]:
    # An int key means "no augmentation" (evaluation); a tuple carries the sample's seed.
    if isinstance(key, tuple):
        return key[0], torch.Generator().manual_seed(key[1])
    return key, None


class PairedImages(Dataset):
    """(photo, cartoon) or (image, mask) pairs through ``transform(a, b, gen) -> tensors``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transform: Callable,
                 second_is_mask: bool = False) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.second_is_mask = second_is_mask

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        i, gen = _generator(key)
        a, b = self.pairs[i]
        second = load_mask(b) if self.second_is_mask else load_rgb(b)
        return self.transform(load_rgb(a), second, gen)


class LabelledImages(Dataset):
    def __init__(self, items: Sequence[tuple[Path, int]], transform: Callable) -> None:
        self.items = list(items)
        self.transform = transform

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        i, gen = _generator(key)
        path, label = self.items[i]
        return self.transform(load_rgb(path), gen), label


class Images(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> torch.Tensor:
        i, gen = _generator(key)
        return self.transform(load_rgb(self.paths[i]), gen)
