"""Check an extracted dataset's layout for its task, decode every image once, split it.

Layouts (paths relative to the dataset root):

    cartoonize  train/photo/ + train/cartoon/ [+ val/photo/ + val/cartoon/], paired by stem
    matte       images/ + masks/ [+ val/images/ + val/masks/], paired by stem
    classify    <class>/... at the root, or train/<class>/ [+ val/<class>/] [+ test/<class>/]
    generate    images/
    autoencode  images/

Folders are read recursively; a pair matches on the path under its folder without the
suffix (``photo/a/x.jpg`` pairs with ``cartoon/a/x.png``). Every problem with a file is a
skip with a reason in the report, never an exception; whether the rest can train is decided
by the minimums below.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, ImageChops

from model_store.dataset_schema import (
    SAMPLE_KEYS,
    DatasetIndex,
    IntakeReport,
    Sample,
    SizeStats,
    SkippedFile,
)
from model_store.dataset_split import auto_split
from model_store.tasks import Task

# ---- "can train" minimums
MIN_PAIRS = 2  # cartoonize, matte: one to train on and one to validate with
MIN_CLASSES = 2  # classify: a one-class classifier learns nothing
MIN_TRAIN_PER_CLASS = 1  # classify: every label must be seen in training
MIN_IMAGES = 4  # generate, autoencode: below this an epoch is not even one small batch

_EXPECTED: dict[Task, str] = {
    Task.CARTOONIZE: "train/photo/ and train/cartoon/ (optional val/photo/ and val/cartoon/)",
    Task.MATTE: "images/ and masks/ (optional val/images/ and val/masks/)",
    Task.CLASSIFY: "one folder per class, at the root or under train/ (optional val/, test/)",
    Task.GENERATE: "images/",
    Task.AUTOENCODE: "images/",
}
_MASK_MODES = frozenset({"1", "L", "LA", "P", "I", "F", "I;16", "I;16B", "I;16L"})


@dataclass
class _Scan:
    root: Path
    task: Task
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
        return f"not a readable image ({type(exc).__name__}: {exc})"


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


def _scan_pairs(scan: _Scan, folders: tuple[str, str], names: tuple[str, str],
                mask: bool) -> tuple[dict[str, list[Sample]], bool]:
    a_dir, b_dir = folders
    a, b = names
    if not (scan.is_dir(a_dir) and scan.is_dir(b_dir)):
        scan.problems.append(f"expected {_EXPECTED[scan.task]}")
        return {"train": [], "val": []}, False
    train = scan.pairs(a_dir, b_dir, a, b, mask)
    va, vb = f"val/{a_dir.rsplit('/', 1)[-1]}", f"val/{b_dir.rsplit('/', 1)[-1]}"
    val = scan.pairs(va, vb, a, b, mask) if scan.is_dir(va) and scan.is_dir(vb) else []
    if val:
        return {"train": train, "val": val}, True
    if scan.is_dir(va) or scan.is_dir(vb):
        scan.warnings.append(f"no usable {va} + {vb} pairs: the train pairs were split instead")
    return auto_split(train, a, with_test=False), False


def _scan_classify(scan: _Scan) -> tuple[dict[str, list[Sample]], bool, list[str]]:
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
            images = [dict(s, label=label) for s in scan.images(folder)]
            found.setdefault(split, {})[label] = images
    for f in scan.files:
        if f not in scan.claimed and "/" not in f.removeprefix(f"{base}/" if base else ""):
            scan.skip(f, "not inside a class folder")
    labels = [c for c in classes if found.get("train", {}).get(c)]
    for c in sorted(set(classes) - set(labels)):
        scan.warnings.append(f"class {c!r} has no readable train images and was left out")
    given = any(found.get(s) for s in ("val", "test"))
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label in labels:
        if given:
            per = {s: found.get(s, {}).get(label, []) for s in splits}
        else:
            per = auto_split(found["train"][label], "path", with_test=True)
        for s, items in per.items():
            splits[s].extend(items)
    return splits, given, labels


def scan_dataset(root: Path, task: Task, max_pixels: int) -> tuple[IntakeReport, DatasetIndex]:
    """Scan ``root`` for ``task``; the report says whether the index can train."""
    scan = _Scan(root, task, max_pixels)
    labels: list[str] | None = None
    if task == Task.CARTOONIZE:
        splits, given = _scan_pairs(scan, ("train/photo", "train/cartoon"), ("photo", "cartoon"),
                                    mask=False)
    elif task == Task.MATTE:
        splits, given = _scan_pairs(scan, ("images", "masks"), ("image", "mask"), mask=True)
    elif task == Task.CLASSIFY:
        splits, given, labels = _scan_classify(scan)
    else:
        if not scan.is_dir("images"):
            scan.problems.append(f"expected {_EXPECTED[task]}")
        splits, given = auto_split(scan.images("images"), "path", with_test=False), False
    for f in scan.files:
        if f not in scan.claimed:
            scan.skip(f, f"not part of the {task.value} layout (expected {_EXPECTED[task]})")
    primary = SAMPLE_KEYS[task][0]
    for items in splits.values():
        items.sort(key=lambda s: str(s[primary]))
    _check_minimums(scan, splits, labels)
    return _report(scan, splits, given, labels), DatasetIndex(task=task, splits=splits,
                                                              labels=labels)


def _check_minimums(scan: _Scan, splits: dict[str, list[Sample]], labels: list[str] | None
                    ) -> None:
    total = sum(len(v) for v in splits.values())
    if scan.task in (Task.CARTOONIZE, Task.MATTE):
        if total < MIN_PAIRS or not splits["train"]:
            scan.problems.append(f"found {total} usable pairs; at least {MIN_PAIRS} are needed")
    elif scan.task == Task.CLASSIFY:
        assert labels is not None
        if len(labels) < MIN_CLASSES:
            scan.problems.append(
                f"found {len(labels)} class(es) with at least {MIN_TRAIN_PER_CLASS} readable"
                f" train image; at least {MIN_CLASSES} are needed"
            )
    elif total < MIN_IMAGES:
        scan.problems.append(f"found {total} usable images; at least {MIN_IMAGES} are needed")
    if not scan.problems and (not splits.get("train") or not splits.get("val")):
        # Training needs both: validation decides early stopping and the activation gate.
        scan.problems.append(
            f"the split has {len(splits.get('train', []))} train and"
            f" {len(splits.get('val', []))} validation samples; both must be non-empty"
            " (add images, or give a val/ split)"
        )


def _report(scan: _Scan, splits: dict[str, list[Sample]], given: bool,
            labels: list[str] | None) -> IntakeReport:
    samples = [s for items in splits.values() for s in items]
    class_counts = None
    if labels is not None:
        class_counts = {c: {s: sum(1 for x in splits[s] if x["label"] == c) for s in splits}
                        for c in labels}
    accepted = {str(v) for s in samples for k, v in s.items() if k not in
                ("width", "height", "label")}
    return IntakeReport(
        task=scan.task,
        can_train=not scan.problems,
        problems=scan.problems,
        warnings=scan.warnings,
        split_source="given" if given else "auto",
        counts={s: len(items) for s, items in splits.items()},
        class_counts=class_counts,
        image_size=_size_stats(samples),
        files_seen=len(scan.files),
        files_accepted=len(accepted),
        skipped=sorted(scan.skipped, key=lambda s: s.path),
    )


def _size_stats(samples: list[Sample]) -> SizeStats | None:
    if not samples:
        return None
    ws = [int(s["width"]) for s in samples]
    hs = [int(s["height"]) for s in samples]
    return SizeStats(min_width=min(ws), max_width=max(ws), mean_width=sum(ws) / len(ws),
                     min_height=min(hs), max_height=max(hs), mean_height=sum(hs) / len(hs))
