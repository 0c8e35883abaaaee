"""Scan an extracted dataset with its task's layout (tasks/layouts.py), then report.

The layout finds, pairs and splits the samples; this module turns what it found into the
intake report and the index that trainers read.
"""

from __future__ import annotations

from pathlib import Path

from model_store.dataset_schema import DatasetIndex, IntakeReport, SizeStats
from tasks import get_task
from tasks.layouts import Sample, Scan


def scan_dataset(root: Path, task: str, max_pixels: int) -> tuple[IntakeReport, DatasetIndex]:
    """Scan ``root`` for ``task``; the report says whether the index can train."""
    layout = get_task(task).layout
    scan = Scan(root, max_pixels)
    found = layout.scan(scan)
    for f in scan.files:
        if f not in scan.claimed:
            scan.skip(f, f"not part of the {task} layout (expected {layout.expected})")
    primary = layout.sample_keys[0]
    for items in found.splits.values():
        items.sort(key=lambda s: str(s[primary]))
    report = _report(task, scan, found.splits, found.given, found.labels)
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
    )


def _size_stats(samples: list[Sample]) -> SizeStats | None:
    if not samples:
        return None
    ws = [int(s["width"]) for s in samples]
    hs = [int(s["height"]) for s in samples]
    return SizeStats(min_width=min(ws), max_width=max(ws), mean_width=sum(ws) / len(ws),
                     min_height=min(hs), max_height=max(hs), mean_height=sum(hs) / len(hs))
