"""Scan an extracted dataset with its task's layout (tasks/layouts.py), then report.

The layout finds, pairs and splits the samples; this module turns what it found into the
intake report and the index that trainers read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from PIL import Image

from model_store.dataset_schema import DatasetIndex, IntakeReport, SizeStats
from tasks import TaskSpec
from tasks.layouts import (
    ClassFolderLayout,
    DatasetLayout,
    ImageFolderLayout,
    PairedLayout,
    Sample,
    Scan,
)

# File name suffixes Pillow can open: anything else is never an image sample.
IMAGE_SUFFIXES = frozenset(ext.lower() for ext in Image.registered_extensions())


def _layout_uses(layout: DatasetLayout) -> Callable[[tuple[str, ...]], bool] | None:
    """Whether a file at ``parts`` (relative to the dataset root) can be a sample of the
    built-in layouts; None for a layout this module does not know (keep everything)."""
    if isinstance(layout, PairedLayout):
        folders = [*layout.folders,
                   *(f"val/{f.rsplit('/', 1)[-1]}" for f in layout.folders)]
        prefixes = tuple(tuple(f.split("/")) for f in folders)
        return lambda parts: any(len(parts) > len(p) and parts[:len(p)] == p
                                 for p in prefixes)
    if isinstance(layout, ImageFolderLayout):
        return lambda parts: len(parts) > 1 and parts[0] == layout.folder
    if isinstance(layout, ClassFolderLayout):
        # <class>/... at the root, or train|val|test/<class>/...
        return lambda parts: len(parts) > (2 if parts[0] in layout.top_names else 1)
    return None


def keep_rule(spec: TaskSpec) -> Callable[[PurePosixPath], bool]:
    """Which archive entries intake extracts for ``task``: image files (by suffix) where the
    task's layout looks for samples, with or without one wrapper folder (people zip the
    folder rather than its contents). Everything else is ignored, never written. A layout
    of a plugin that this module does not know keeps every file (it may read others)."""
    uses = _layout_uses(spec.layout)

    def keep(rel: PurePosixPath) -> bool:
        if uses is None:
            return True
        if rel.suffix.lower() not in IMAGE_SUFFIXES:
            return False
        parts = rel.parts
        return uses(parts) or (len(parts) > 1 and uses(parts[1:]))

    return keep


def prune_unused(root: Path, index: DatasetIndex) -> int:
    """Delete the files under ``root`` that ``index`` does not reference (the skipped ones:
    they stay listed in the report) and the folders left empty; returns how many files.
    A dataset keeps only what trains."""
    used = {str(v) for items in index.splits.values() for s in items
            for k, v in s.items() if k not in ("label", "width", "height")}
    removed = 0
    for dirpath, _dirs, names in os.walk(root, topdown=False):
        base = Path(dirpath)
        for name in names:
            if (base / name).relative_to(root).as_posix() not in used:
                (base / name).unlink()
                removed += 1
        if base != root:
            with contextlib.suppress(OSError):
                base.rmdir()  # only succeeds when empty
    return removed


def cap_report(report: IntakeReport, max_items: int) -> IntakeReport:
    """The report with its lists cut to ``max_items`` entries each; the counts
    (``files_skipped``, ``files_ignored``, ...) still cover everything, and ``truncated``
    says whether anything was cut."""
    cut = (len(report.skipped) > max_items or len(report.ignored) > max_items
           or len(report.problems) > max_items or len(report.warnings) > max_items)
    return report.model_copy(update={
        "skipped": report.skipped[:max_items], "ignored": report.ignored[:max_items],
        "problems": report.problems[:max_items], "warnings": report.warnings[:max_items],
        "files_skipped": max(report.files_skipped, len(report.skipped)),
        "truncated": report.truncated or cut,
    })


def scan_dataset(root: Path, spec: TaskSpec, max_pixels: int, max_items: int | None = None
                 ) -> tuple[IntakeReport, DatasetIndex]:
    """Scan ``root`` for the task of ``spec`` (resolved once by the caller); the report says
    whether the index can train. ``max_items`` caps the report's lists (``cap_report``)."""
    task = spec.name
    layout = spec.layout
    scan = Scan(root, max_pixels)
    found = layout.scan(scan)
    for f in scan.files:
        if f not in scan.claimed:
            scan.skip(f, f"not part of the {task} layout (expected {layout.expected})")
    primary = layout.sample_keys[0]
    for items in found.splits.values():
        items.sort(key=lambda s: str(s[primary]))
    report = _report(task, scan, found.splits, found.given, found.labels)
    if max_items is not None:
        report = cap_report(report, max_items)
    return report, DatasetIndex(task=task, splits=found.splits, labels=found.labels)


def _report(task: str, scan: Scan, splits: dict[str, list[Sample]], given: bool,
            labels: list[str] | None) -> IntakeReport:
    samples = [s for items in splits.values() for s in items]
    class_counts = None
    if labels is not None:
        class_counts = {c: {s: sum(1 for x in splits[s] if x["label"] == c) for s in splits}
                        for c in labels}
    accepted = {str(v) for s in samples for k, v in s.items() if k not in
                ("width", "height", "label")}
    return IntakeReport(
        task=task,
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
        files_skipped=len(scan.skipped),
    )


def _size_stats(samples: list[Sample]) -> SizeStats | None:
    if not samples:
        return None
    ws = [int(s["width"]) for s in samples]
    hs = [int(s["height"]) for s in samples]
    return SizeStats(min_width=min(ws), max_width=max(ws), mean_width=sum(ws) / len(ws),
                     min_height=min(hs), max_height=max(hs), mean_height=sum(hs) / len(hs))
