"""Dataset layouts: how a task's upload is laid out, and the scan that reads one.

A task spec names one layout object; the intake (``model_store.dataset_scan``) runs its
``scan`` over the extracted files and turns the result into the report and the index. The
three kinds below cover the five built-in tasks; a new family either reuses one or brings
its own class with the same three members (``expected``, ``top_names``, ``scan``).

Folders are read recursively; a pair matches on the path under its folder without the
suffix (``photo/a/x.jpg`` pairs with ``cartoon/a/x.png``). Every problem with a file is a
skip with a reason in the report, never an exception; whether the rest can train is decided
by each layout's minimums.

Torch-free: decoding is Pillow's.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from PIL import Image, ImageChops
from pydantic import BaseModel

from core.errors import public_reason
from tasks.split import auto_split

# One entry of index.json: paths relative to data/, plus "label" (classify) and the primary
# image's "width" and "height".
Sample = dict[str, str | int]
Splits = dict[str, list[Sample]]

_MASK_MODES = frozenset({"1", "L", "LA", "P", "I", "F", "I;16", "I;16B", "I;16L"})


class SkippedFile(BaseModel):
    path: str  # relative to the dataset root (after a common top folder was stripped)
    reason: str


@dataclass
class ScanResult:
    """What a layout found: the splits, whether the archive gave them, class names."""

    splits: Splits
    given: bool
    labels: list[str] | None = None


@dataclass
class Scan:
    """The extracted files of one upload, with the bookkeeping every layout shares."""

    root: Path
    max_pixels: int
    files: list[str] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)
    skipped: list[SkippedFile] = field(default_factory=list)
    decoded: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for dirpath, _dirs, names in os.walk(self.root):
            rel_dir = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            self.files.extend((rel_dir / n).as_posix() for n in names)
        self.files.sort()

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def subdirs(self, rel: str) -> list[str]:
        base = self.root / rel
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def files_under(self, rel: str) -> list[str]:
        prefix = f"{rel}/" if rel else ""
        found = [f for f in self.files if f.startswith(prefix)]
        self.claimed.update(found)
        return found

    def skip(self, rel: str, reason: str) -> None:
        self.claimed.add(rel)
        self.skipped.append(SkippedFile(path=rel, reason=reason))

    def decode(self, rel: str, mask: bool = False) -> tuple[int, int] | None:
        """Width and height, or None (skipped with the reason). Each file decodes once."""
        if rel not in self.decoded:
            result = _decode(self.root / rel, self.max_pixels, mask)
            if isinstance(result, str):
                self.skip(rel, result)
                self.decoded[rel] = None
            else:
                self.decoded[rel] = result
        return self.decoded[rel]

    def by_stem(self, folder: str, what: str) -> dict[str, str]:
        groups: dict[str, list[str]] = defaultdict(list)
        for f in self.files_under(folder):
            groups[PurePosixPath(f[len(folder) + 1:]).with_suffix("").as_posix()].append(f)
        out = {}
        for stem, paths in groups.items():
            if len(paths) == 1:
                out[stem] = paths[0]
            else:
                for p in paths:
                    self.skip(p, f"ambiguous: several {what} files share the stem {stem!r}")
        return out

    def pairs(self, a_dir: str, b_dir: str, a: str, b: str, mask: bool) -> list[Sample]:
        left, right = self.by_stem(a_dir, a), self.by_stem(b_dir, b)
        for stem in sorted(left.keys() - right.keys()):
            self.skip(left[stem], f"no matching {b} for {a} {left[stem]}")
        for stem in sorted(right.keys() - left.keys()):
            self.skip(right[stem], f"no matching {a} for {b} {right[stem]}")
        out: list[Sample] = []
        for stem in sorted(left.keys() & right.keys()):
            pa, pb = left[stem], right[stem]
            sa, sb = self.decode(pa), self.decode(pb, mask=mask)
            if sa is None or sb is None:
                if sa is not None:
                    self.skip(pa, f"its {b} {pb} was skipped")
                if sb is not None:
                    self.skip(pb, f"its {a} {pa} was skipped")
                continue
            if mask and sa != sb:
                self.skip(pb, f"mask is {sb[0]}x{sb[1]} but its image {pa} is {sa[0]}x{sa[1]}")
                self.skip(pa, f"its {b} {pb} has a different size")
                continue
            out.append({a: pa, b: pb, "width": sa[0], "height": sa[1]})
        return out

    def images(self, folder: str) -> list[Sample]:
        out: list[Sample] = []
        for f in self.files_under(folder):
            size = self.decode(f)
            if size is not None:
                out.append({"path": f, "width": size[0], "height": size[1]})
        return out

    def require_train_and_val(self, splits: Splits) -> None:
        """Training needs both: validation decides early stopping and the activation gate."""
        if not self.problems and (not splits.get("train") or not splits.get("val")):
            self.problems.append(
                f"the split has {len(splits.get('train', []))} train and"
                f" {len(splits.get('val', []))} validation samples; both must be non-empty"
                " (add images, or give a val/ split)"
            )


def _decode(path: Path, max_pixels: int, mask: bool) -> tuple[int, int] | str:
    try:
        with Image.open(path) as im:
            width, height = im.size
            # Checked on the header, before load(): the same guard inference applies.
            if width * height > max_pixels:
                return f"too many pixels: {width}x{height} > {max_pixels}"
            im.load()
            if mask and not _is_single_channel(im):
                return f"mask has colour (mode {im.mode}); masks must be greyscale"
            return width, height
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad input
        # Pillow names the file by its absolute (staging) path: name it by its own name.
        reason = public_reason(str(exc).replace(str(path), path.name))
        return f"not a readable image ({type(exc).__name__}: {reason})"


def _is_single_channel(im: Image.Image) -> bool:
    if im.mode in _MASK_MODES:
        return True
    if im.mode not in ("RGB", "RGBA"):
        return False
    # A greyscale mask saved as RGB(A) is fine: all three channels equal, alpha opaque.
    r, g, b = im.getchannel("R"), im.getchannel("G"), im.getchannel("B")
    if ImageChops.difference(r, g).getbbox() or ImageChops.difference(r, b).getbbox():
        return False
    return im.mode == "RGB" or im.getchannel("A").getextrema() == (255, 255)


class DatasetLayout(Protocol):
    """What a task spec says about its uploads."""

    @property
    def expected(self) -> str:
        """Human text of the expected layout, used in every "expected ..." problem."""
        ...

    @property
    def top_names(self) -> frozenset[str]:
        """Top-level names that belong to the layout: a single top folder with one of these
        names is the layout itself, not a wrapper folder to strip."""
        ...

    @property
    def sample_keys(self) -> tuple[str, ...]:
        """The keys of one sample in index.json; the first is the primary image, and every
        key but "label" is a path relative to data/."""
        ...

    def scan(self, scan: Scan) -> ScanResult:
        """Find the samples, split them, and add problems when they cannot train."""
        ...


@dataclass(frozen=True)
class PairedLayout:
    """Pairs by stem of ``folders[0]/`` and ``folders[1]/`` [+ ``val/<leaf>/`` each]."""

    folders: tuple[str, str]
    names: tuple[str, str]
    expected: str
    mask: bool = False  # the second of each pair is a greyscale mask of the same size
    min_pairs: int = 2  # one to train on and one to validate with

    @property
    def top_names(self) -> frozenset[str]:
        return frozenset({f.split("/")[0] for f in self.folders} | {"val"})

    @property
    def sample_keys(self) -> tuple[str, ...]:
        return self.names

    def scan(self, scan: Scan) -> ScanResult:
        a_dir, b_dir = self.folders
        a, b = self.names
        if not (scan.is_dir(a_dir) and scan.is_dir(b_dir)):
            scan.problems.append(f"expected {self.expected}")
            return ScanResult({"train": [], "val": []}, False)
        train = scan.pairs(a_dir, b_dir, a, b, self.mask)
        va, vb = f"val/{a_dir.rsplit('/', 1)[-1]}", f"val/{b_dir.rsplit('/', 1)[-1]}"
        val = scan.pairs(va, vb, a, b, self.mask) if scan.is_dir(va) and scan.is_dir(vb) else []
        if val:
            splits, given = {"train": train, "val": val}, True
        else:
            if scan.is_dir(va) or scan.is_dir(vb):
                scan.warnings.append(
                    f"no usable {va} + {vb} pairs: the train pairs were split instead")
            splits, given = auto_split(train, a, with_test=False), False
        total = sum(len(v) for v in splits.values())
        if total < self.min_pairs or not splits["train"]:
            scan.problems.append(
                f"found {total} usable pairs; at least {self.min_pairs} are needed")
        scan.require_train_and_val(splits)
        return ScanResult(splits, given)


@dataclass(frozen=True)
class ImageFolderLayout:
    """Unlabelled images under one folder (recursively)."""

    folder: str = "images"
    min_images: int = 4  # below this an epoch is not even one small batch
    sample_keys: tuple[str, ...] = ("path",)

    @property
    def expected(self) -> str:
        return f"{self.folder}/"

    @property
    def top_names(self) -> frozenset[str]:
        return frozenset({self.folder})

    def scan(self, scan: Scan) -> ScanResult:
        if not scan.is_dir(self.folder):
            scan.problems.append(f"expected {self.expected}")
        splits = auto_split(scan.images(self.folder), "path", with_test=False)
        total = sum(len(v) for v in splits.values())
        if total < self.min_images:
            scan.problems.append(
                f"found {total} usable images; at least {self.min_images} are needed")
        scan.require_train_and_val(splits)
        return ScanResult(splits, False)


@dataclass(frozen=True)
class ClassFolderLayout:
    """One folder per class, at the root or under ``train/`` [+ ``val/``, ``test/``]."""

    min_classes: int = 2  # a one-class classifier learns nothing
    min_train_per_class: int = 1  # every label must be seen in training
    expected: str = "one folder per class, at the root or under train/ (optional val/, test/)"
    top_names: frozenset[str] = frozenset({"train", "val", "test"})
    sample_keys: tuple[str, ...] = ("path", "label")

    def scan(self, scan: Scan) -> ScanResult:
        nested = scan.is_dir("train")
        base = "train" if nested else ""
        # val/ or test/ without train/ is not a class (the worker's loader agrees).
        classes = [c for c in scan.subdirs(base) if nested or c not in ("val", "test")]
        found: dict[str, dict[str, list[Sample]]] = {}
        for split in ("train", "val", "test") if nested else ("train",):
            prefix = split if nested else ""
            for label in scan.subdirs(prefix) if nested else classes:
                folder = f"{prefix}/{label}" if prefix else label
                if label not in classes:
                    for f in scan.files_under(folder):
                        scan.skip(f, f"class {label!r} has no train/{label}/ folder")
                    continue
                images: list[Sample] = [dict(s, label=label) for s in scan.images(folder)]
                found.setdefault(split, {})[label] = images
        for f in scan.files:
            if f not in scan.claimed and "/" not in f.removeprefix(f"{base}/" if base else ""):
                scan.skip(f, "not inside a class folder")
        labels = [c for c in classes if found.get("train", {}).get(c)]
        for c in sorted(set(classes) - set(labels)):
            scan.warnings.append(f"class {c!r} has no readable train images and was left out")
        given = any(found.get(s) for s in ("val", "test"))
        splits: Splits = {"train": [], "val": [], "test": []}
        for label in labels:
            if given:
                per = {s: found.get(s, {}).get(label, []) for s in splits}
            else:
                per = auto_split(found["train"][label], "path", with_test=True)
            for s, items in per.items():
                splits[s].extend(items)
        if len(labels) < self.min_classes:
            scan.problems.append(
                f"found {len(labels)} class(es) with at least {self.min_train_per_class}"
                f" readable train image; at least {self.min_classes} are needed"
            )
        scan.require_train_and_val(splits)
        return ScanResult(splits, given, labels)
