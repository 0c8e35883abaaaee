"""Dataset intake: upload -> safe extract -> layout scan -> refuse, or publish.

The HTTP route stays thin (``store``: the process's dataset store, opened once by
``model_store.factory.open_dataset_store``)::

    with store.upload_file() as tmp:
        await receive_upload_async(request.stream(), tmp, settings.dataset_max_upload_bytes)
        result = await run_in_threadpool(ingest_upload, store, task, tmp, filename, settings)

``ingest_upload`` and ``receive_upload`` block (file I/O, decoding): call them in a thread;
``receive_upload_async`` does its writes in threads itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from model_store.archives import CHUNK, ExtractLimits, extract_archive
from model_store.dataset_scan import keep_rule, prune_unused, scan_dataset
from model_store.dataset_schema import DatasetMeta, IngestResult
from model_store.datasets import DATA_DIR, DatasetStore, new_dataset_id, tree_bytes
from model_store.errors import DatasetInvalid, UploadTooLarge
from tasks import TaskSpec, get_task

__all__ = [
    "IntakeSettings",
    "find_data_root",
    "ingest_upload",
    "receive_upload",
    "receive_upload_async",
]


# ---- upload
class _CappedWriter:
    def __init__(self, fh: BinaryIO, max_bytes: int) -> None:
        self.fh, self.max_bytes, self.written = fh, max_bytes, 0

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.written > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        self.fh.write(chunk)


def _iter_chunks(source: Iterable[bytes] | BinaryIO) -> Iterable[bytes]:
    if isinstance(source, Iterable):
        return source
    return iter(lambda: source.read(CHUNK), b"")


def receive_upload(source: Iterable[bytes] | BinaryIO, dest_file: Path, max_bytes: int) -> int:
    """Write ``source`` (chunks or a binary file) to ``dest_file``; returns the byte count.

    Raises ``UploadTooLarge`` as soon as the count passes ``max_bytes`` and removes the
    partial file, so at most one chunk beyond the cap is ever held or written.
    """
    try:
        with open(dest_file, "wb") as fh:
            writer = _CappedWriter(fh, max_bytes)
            for chunk in _iter_chunks(source):
                writer.write(chunk)
        return writer.written
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest_file)
        raise


async def receive_upload_async(
    source: AsyncIterable[bytes], dest_file: Path, max_bytes: int
) -> int:
    """``receive_upload`` for an async body stream; disk writes run off the event loop."""
    fh = await asyncio.to_thread(open, dest_file, "wb")
    try:
        writer = _CappedWriter(fh, max_bytes)
        async for chunk in source:
            await asyncio.to_thread(writer.write, chunk)
        return writer.written
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest_file)
        raise
    finally:
        await asyncio.to_thread(fh.close)


# ---- intake
def find_data_root(extracted: Path, spec: TaskSpec) -> tuple[Path, str | None]:
    """The dataset root: ``extracted``, or its single top folder when that is a wrapper.

    People zip the folder rather than its contents. A lone folder is only stripped when its
    name is not part of the task's layout (``train/`` alone is a layout) and it holds
    folders (a lone class folder of images stays, and fails the class minimum clearly).
    """
    entries = list(extracted.iterdir())
    layout_names = spec.layout.top_names
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in layout_names:
        if any(child.is_dir() for child in entries[0].iterdir()):
            return entries[0], entries[0].name
    return extracted, None


class IntakeSettings(Protocol):
    """The fields intake reads from ``core.settings.Settings`` (model_store cannot import
    the service package, so it names them instead)."""

    dataset_max_entries: int
    dataset_max_extracted_bytes: int
    dataset_max_compression_ratio: float
    dataset_max_files: int
    dataset_max_staging_bytes: int
    dataset_report_max_items: int
    max_pixels: int


def ingest_upload(
    store: DatasetStore | Path | str,
    task: str,
    upload_path: Path,
    filename: str,
    settings: IntakeSettings,
    *,
    name: str | None = None,
    dataset_id: str | None = None,
    synthetic: bool = False,
    owner: str | None = None,
) -> IngestResult:
    """Turn an uploaded archive into a stored dataset, or refuse it leaving nothing behind.

    Raises ``NotAnArchive``, ``ArchiveUnsafe``, ``ArchiveTooLarge`` (nothing was scanned),
    ``DatasetInvalid`` (carries the IntakeReport) or ``DatasetExists``. ``upload_path``
    belongs to the caller and is left alone; every temporary file intake makes is removed.
    ``store`` is a dataset store of any backend (the store's ``staging`` is local, its
    ``publish`` is what makes the dataset visible); a path means a directory store there.
    """
    spec = get_task(task)  # resolved once: the layout, the scan and the meta use it
    task = spec.name
    if not isinstance(store, DatasetStore):
        store = DatasetStore(store)
    meta_id = dataset_id or new_dataset_id()
    store.path(meta_id)  # validates a client-chosen id before any work
    max_items = settings.dataset_report_max_items
    limits = ExtractLimits(
        max_entries=settings.dataset_max_entries,
        max_bytes=settings.dataset_max_extracted_bytes,
        max_ratio=settings.dataset_max_compression_ratio,
        max_files=settings.dataset_max_files,
        max_staging_bytes=settings.dataset_max_staging_bytes,
        keep=keep_rule(spec),
        ignored_sample=max_items,
    )
    with store.staging() as staged:
        extracted = staged / "extracted"
        stats = extract_archive(upload_path, extracted, limits)
        root, stripped = find_data_root(extracted, spec)
        os.rename(root, staged / DATA_DIR)
        shutil.rmtree(extracted, ignore_errors=True)  # the emptied wrapper, if stripped
        report, index = scan_dataset(staged / DATA_DIR, spec, settings.max_pixels, max_items)
        report.stripped_folder = stripped
        report.files_ignored = stats.ignored
        report.ignored = stats.ignored_names[:max_items]
        report.truncated = report.truncated or stats.ignored > len(report.ignored)
        if not report.can_train:
            raise DatasetInvalid(report)
        prune_unused(staged / DATA_DIR, index)  # skipped files are reported, not kept
        meta = DatasetMeta(
            id=meta_id,
            task=task,
            name=name or Path(filename).name.split(".")[0] or meta_id,
            bytes=tree_bytes(staged / DATA_DIR),
            filename=filename,
            synthetic=synthetic,
            counts=report.counts,
            owner=owner,
        )
        store.publish(staged, meta, report, index)
    return IngestResult(meta=meta, report=report)
