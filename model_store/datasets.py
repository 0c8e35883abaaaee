"""Datasets beside the models: ``<store>/datasets/<id>/`` (files described in dataset_schema).

A dataset is built in ``<store>/datasets/.staging/<uuid>/`` and becomes visible in one
rename, only once intake says it can train; a refused or failed intake removes its staging
directory. Deletion renames the dataset back into ``.staging`` first, so a reader sees the
whole dataset or none of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from model_store.dataset_schema import DatasetIndex, DatasetMeta, IntakeReport
from model_store.errors import DatasetExists, DatasetInUse, DatasetNotFound
from model_store.store import NAME_RE, validate_name, write_atomic

DATA_DIR = "data"
REPORT_FILE = "report.json"
INDEX_FILE = "index.json"
META_FILE = "meta.json"
STAGING = ".staging"


def validate_dataset_id(dataset_id: str) -> str:
    return validate_name(dataset_id, "dataset id")


def new_dataset_id() -> str:
    return uuid.uuid4().hex


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class DatasetStore:
    def __init__(self, root: Path | str) -> None:
        """``root`` is the store root (the same one ModelStore takes)."""
        self.dir = Path(root) / "datasets"
        self.staging_dir = self.dir / STAGING
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    # ----- paths
    def path(self, dataset_id: str) -> Path:
        return self.dir / validate_dataset_id(dataset_id)

    def data_dir(self, dataset_id: str) -> Path:
        """Where the files live; the index's sample paths are relative to it."""
        return self._existing(dataset_id) / DATA_DIR

    def _existing(self, dataset_id: str) -> Path:
        path = self.path(dataset_id)
        if not (path / META_FILE).is_file():
            raise DatasetNotFound(f"dataset {dataset_id!r} does not exist")
        return path

    # ----- reading
    def ids(self) -> list[str]:
        return sorted(
            p.name for p in self.dir.iterdir()
            if p.is_dir() and NAME_RE.fullmatch(p.name) and (p / META_FILE).is_file()
        )

    def get(self, dataset_id: str) -> DatasetMeta:
        path = self._existing(dataset_id) / META_FILE
        return DatasetMeta.model_validate_json(path.read_bytes())

    def report(self, dataset_id: str) -> IntakeReport:
        path = self._existing(dataset_id) / REPORT_FILE
        return IntakeReport.model_validate_json(path.read_bytes())

    def index(self, dataset_id: str) -> DatasetIndex:
        path = self._existing(dataset_id) / INDEX_FILE
        return DatasetIndex.model_validate_json(path.read_bytes())

    def list_datasets(self, task: str | None = None) -> list[DatasetMeta]:
        """Every dataset (of ``task`` when given), oldest first."""
        out = []
        for dataset_id in self.ids():
            with contextlib.suppress(DatasetNotFound):  # deleted while we listed
                meta = self.get(dataset_id)
                if task is None or meta.task == task:
                    out.append(meta)
        return sorted(out, key=lambda m: (m.created_at, m.id))

    # ----- writing
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory to build a dataset in; always removed afterwards.

        ``publish`` moves it away, so on success there is nothing left to remove.
        """
        sdir = self.staging_dir / uuid.uuid4().hex
        sdir.mkdir()
        try:
            yield sdir
        finally:
            shutil.rmtree(sdir, ignore_errors=True)

    @contextlib.contextmanager
    def upload_file(self) -> Iterator[Path]:
        """A temporary path for an incoming upload (same filesystem); removed afterwards."""
        path = self.staging_dir / f"upload-{uuid.uuid4().hex}"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def publish(self, staged: Path, meta: DatasetMeta, report: IntakeReport,
                index: DatasetIndex) -> DatasetMeta:
        """Write the JSON files into ``staged`` (which holds ``data/``) and rename it live."""
        write_atomic(staged / REPORT_FILE, report.model_dump_json(indent=2).encode())
        write_atomic(staged / INDEX_FILE, index.model_dump_json(indent=2).encode())
        # meta.json is written last: a directory without it is never listed as a dataset.
        write_atomic(staged / META_FILE, meta.model_dump_json(indent=2).encode())
        target = self.path(meta.id)
        if target.exists():
            raise DatasetExists(f"dataset {meta.id!r} already exists")
        try:
            os.rename(staged, target)
        except OSError as exc:  # lost a race to a dataset with the same id
            raise DatasetExists(f"dataset {meta.id!r} already exists") from exc
        return meta

    def delete(self, dataset_id: str, in_use: Callable[[str], bool] | None = None) -> None:
        """Remove a dataset. ``in_use(id)`` (e.g. "a queued or running job names it") makes
        the delete refuse with ``DatasetInUse``; without it nothing is checked.

        A worker that already loaded the index keeps its open files (POSIX), but one that
        has not started would fail, hence the hook.
        """
        path = self._existing(dataset_id)
        if in_use is not None and in_use(dataset_id):
            raise DatasetInUse(f"dataset {dataset_id!r} is used by an unfinished job")
        doomed = self.staging_dir / f"deleting-{uuid.uuid4().hex}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError as exc:
            raise DatasetNotFound(f"dataset {dataset_id!r} does not exist") from exc
        shutil.rmtree(doomed, ignore_errors=True)

    def sweep_staging(self, older_than_s: float = 24 * 3600) -> int:
        """Remove staging leftovers of crashed processes; returns how many were removed."""
        cutoff = time.time() - older_than_s
        removed = 0
        for p in self.staging_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.lstat().st_mtime < cutoff:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink()
                    removed += 1
        return removed
