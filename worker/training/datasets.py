"""A dataset's split assignment (the intake's ``DatasetIndex``) -> torch Datasets.

The layout, pairing and train/val(/test) split of a dataset are decided once, by the
torch-free intake (``model_store.dataset_scan.scan_dataset``), and stored as
``<store>/datasets/<id>/index.json`` beside ``data/``. Trainers and evaluation read that
index, so they train and validate on exactly the samples the intake reported; nothing here
pairs, filters or splits files on its own. A raw folder in the upload layout (tests, demo
data) goes through the same ``scan_dataset`` first.

``Splits`` holds each split as sample dicts with the layout's keys
(``get_task(task).layout.sample_keys``): every key but ``"label"`` is a path, resolved against
the data root. Each trainer turns samples into the items its Datasets take.

Train datasets take keys ``(index, aug_seed)``: each sample's augmentation draws from its own
``torch.Generator`` seeded per (epoch, position), so augmentation is the same whatever the
number of DataLoader workers and after a mid-epoch resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import Dataset

from model_store.dataset_scan import scan_dataset
from model_store.dataset_schema import INDEX_SCHEMA_VERSION, DatasetIndex, IntakeReport
from model_store.datasets import DATA_DIR, INDEX_FILE, REPORT_FILE
from tasks import get_task

# Same default as the service's Settings.max_pixels (the worker does not import service/).
DEFAULT_MAX_PIXELS = 40_000_000

Key = int | tuple[int, int]
# (image, second image or mask, per-sample generator or None) -> the item's tensors.
PairTransform = Callable[[Image.Image, Image.Image, torch.Generator | None],
                         tuple[torch.Tensor, torch.Tensor]]
# (image, per-sample generator or None) -> the image's tensor.
ImageTransform = Callable[[Image.Image, torch.Generator | None], torch.Tensor]
# One sample of a split: the layout's keys; paths (every key but "label") are resolved.
Sample = dict[str, Any]
Samples = list[Sample]
LABEL_KEY = "label"


class DatasetError(ValueError):
    """The dataset cannot train the task (bad layout, wrong task, unreadable index)."""


# ---- the index: stored, or scanned from a raw folder ----------------------------------------


def _stored_dir(dataset_dir: Path) -> Path | None:
    """The stored dataset directory (holding index.json and data/) that ``dataset_dir`` is,
    or whose ``data/`` it is; None for a raw folder."""
    if (dataset_dir / INDEX_FILE).is_file() and (dataset_dir / DATA_DIR).is_dir():
        return dataset_dir
    if dataset_dir.name == DATA_DIR and (dataset_dir.parent / INDEX_FILE).is_file():
        return dataset_dir.parent
    return None


def _path_keys(task: str) -> tuple[str, ...]:
    return tuple(k for k in get_task(task).layout.sample_keys if k != LABEL_KEY)


def _check_paths(index: DatasetIndex, source: Path) -> None:
    keys = _path_keys(index.task)
    for split, samples in index.splits.items():
        for sample in samples:
            for key in keys:
                rel = PurePosixPath(str(sample.get(key, "")))
                if not rel.parts or rel.is_absolute() or ".." in rel.parts:
                    raise DatasetError(f"{source}: {split} sample has a bad {key!r}: {rel}")


def load_dataset(
    dataset_dir: Path | str,
    task: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetIndex, Path, IntakeReport | None]:
    """``(index, data_root, report)`` of a stored dataset or of a raw folder.

    ``dataset_dir`` is a stored dataset (``<store>/datasets/<id>/``, or its ``data/``): its
    ``index.json`` is used as is, ``report.json`` when present. Otherwise it is a raw folder
    in the task's upload layout, scanned with the intake's ``scan_dataset`` (``task`` is
    then required); a scan that cannot train raises ``DatasetError`` with its problems.
    Sample paths in the index are relative to ``data_root``.
    """
    dataset_dir = Path(dataset_dir)
    spec = get_task(task) if task is not None else None
    want = spec.name if spec is not None else None
    stored = _stored_dir(dataset_dir)
    if stored is not None:
        try:
            index = DatasetIndex.model_validate_json((stored / INDEX_FILE).read_bytes())
        except ValidationError as exc:
            raise DatasetError(f"{stored / INDEX_FILE} is not a valid index: {exc}") from None
        if index.schema_version != INDEX_SCHEMA_VERSION:
            raise DatasetError(f"{stored / INDEX_FILE} has schema version "
                               f"{index.schema_version}, expected {INDEX_SCHEMA_VERSION}")
        if want is not None and index.task != want:
            raise DatasetError(f"dataset {stored.name} is a {index.task} dataset,"
                               f" not {want}")
        _check_paths(index, stored / INDEX_FILE)
        report_path = stored / REPORT_FILE
        report = (IntakeReport.model_validate_json(report_path.read_bytes())
                  if report_path.is_file() else None)
        return index, stored / DATA_DIR, report
    if spec is None:
        raise DatasetError(f"{dataset_dir} has no {INDEX_FILE}: name the task to scan it")
    if not dataset_dir.is_dir():
        raise DatasetError(f"dataset folder {dataset_dir} does not exist")
    report, index = scan_dataset(dataset_dir, spec, max_pixels)
    if not report.can_train:
        raise DatasetError("; ".join(report.problems) or f"{dataset_dir} cannot train")
    return index, dataset_dir, report


def load_index(
    dataset_dir: Path | str,
    task: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[DatasetIndex, Path]:
    """``(index, data_root)``: see ``load_dataset`` (which also returns the intake report)."""
    index, data_root, _report = load_dataset(dataset_dir, task, max_pixels=max_pixels)
    return index, data_root


# ---- index samples, with their paths resolved ------------------------------------------------


def _resolved(sample: dict[str, Any], keys: tuple[str, ...], root: Path) -> Sample:
    out: Sample = {k: root / str(sample[k]) for k in keys}
    if LABEL_KEY in sample:
        out[LABEL_KEY] = sample[LABEL_KEY]
    return out


@dataclass
class Splits:
    """The index's splits as sample dicts (paths resolved against ``data_root``), in the
    index's order."""

    index: DatasetIndex
    data_root: Path
    report: IntakeReport | None = None
    train: Samples = field(init=False)
    val: Samples = field(init=False)
    test: Samples = field(init=False)

    def __post_init__(self) -> None:
        keys = _path_keys(self.index.task)
        items = {s: [_resolved(sample, keys, self.data_root) for sample in samples]
                 for s, samples in self.index.splits.items()}
        self.train = items.get("train", [])
        self.val = items.get("val", [])
        self.test = items.get("test", [])

    @property
    def task(self) -> str:
        return self.index.task

    @property
    def classes(self) -> list[str] | None:
        return list(self.index.labels) if self.index.labels is not None else None

    def split(self, name: str) -> Samples:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train": len(self.train), "val": len(self.val),
                               "test": len(self.test), "classes": self.classes}
        if self.report is not None:
            out["split_source"] = self.report.split_source
            # What intake left out (unmatched pair halves, unreadable files, ...).
            out["skipped"] = [s.model_dump() for s in self.report.skipped]
        return out


# A dataset as the training and evaluation functions take it: a stored dataset or raw
# folder (read when called), or the splits a job already read (used as they are).
DatasetSource = Path | str | Splits


def load_splits(
    dataset: DatasetSource,
    task: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Splits:
    """The splits of a stored dataset or raw folder (see ``load_dataset``). Splits already
    loaded are returned as they are (once checked against ``task``), so a job that read its
    dataset once hands that reading to every step instead of the path."""
    if isinstance(dataset, Splits):
        if task is not None and dataset.task != task:
            raise DatasetError(f"the dataset is a {dataset.task} dataset, not {task}")
        return dataset
    index, data_root, report = load_dataset(dataset, task, max_pixels=max_pixels)
    return Splits(index, data_root, report)


# ---- torch Datasets ---------------------------------------------------------------------------


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def load_mask(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("L")


def _generator(key: Key) -> tuple[int, torch.Generator | None]:
    # An int key means "no augmentation" (evaluation); a tuple carries the sample's seed.
    if isinstance(key, tuple):
        return key[0], torch.Generator().manual_seed(key[1])
    return key, None


class PairedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(photo, cartoon) or (image, mask) pairs through ``transform(a, b, gen) -> tensors``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transform: PairTransform,
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


class LabelledImages(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, items: Sequence[tuple[Path, int]], transform: ImageTransform) -> None:
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


class Images(Dataset[torch.Tensor]):
    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> torch.Tensor:
        i, gen = _generator(key)
        return self.transform(load_rgb(self.paths[i]), gen)
