"""Where a job's files live in the store, and safe reads of its sample pictures.

    <store>/jobs/<job_id>/checkpoint.pt   what a redelivered or cancelled job keeps
    <store>/jobs/<job_id>/best.pt
    <store>/jobs/<job_id>/samples/*.png   the pictures the trainer draws after each epoch

Torch-free: the worker writes these, the API lists and serves the samples. With a local
store the worker's work directory *is* the store's (``JobArtifacts``); with an S3 store
(``S3JobArtifacts``) the same names are objects under ``jobs/<job_id>/``: the worker
``push``es what it wrote after each epoch and ``pull``s a checkpoint before it resumes,
so a job continues on any host, and the API fetches samples into its own cache.
``open_artifacts(settings)`` picks the one the settings name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InvalidParameter
from jobs.errors import JobError

if TYPE_CHECKING:
    from core.settings import Settings
    from model_store.objects import ObjectStore

SAMPLES_DIR = "samples"
# What the trainers write ("autoencode_epoch_003.png"); anything else is refused before the
# file system is touched, so no name can leave the samples folder.
SAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.png$")
_EPOCH = re.compile(r"epoch_?(\d+)")


class InvalidSampleName(InvalidParameter):
    def __init__(self, problem: str) -> None:
        super().__init__("name", problem)


class SampleNotFound(JobError):
    code = "sample_not_found"
    http_status = 404


@dataclass(frozen=True)
class SampleFile:
    name: str
    epoch: int | None
    bytes: int


def job_dir(store_root: Path | str, job_id: str) -> Path:
    return Path(store_root) / "jobs" / job_id


# What a job needs to continue where another stopped (written by worker/training/trainers).
CHECKPOINT_FILE = "checkpoint.pt"
RESUME_FILES = (CHECKPOINT_FILE, "best.pt")


def has_checkpoint(store_root: Path | str, job_id: str) -> bool:
    return (job_dir(store_root, job_id) / CHECKPOINT_FILE).is_file()


def copy_checkpoint(store_root: Path | str, source_job: str, target_job: str) -> None:
    """Copy ``source_job``'s checkpoint (and best weights) into ``target_job``'s folder, each
    file written under a temporary name first, so a reader never sees half a file."""
    source, target = job_dir(store_root, source_job), job_dir(store_root, target_job)
    target.mkdir(parents=True, exist_ok=True)
    for name in RESUME_FILES:
        if (source / name).is_file():
            partial = target / f".{name}.partial"
            shutil.copyfile(source / name, partial)
            os.replace(partial, target / name)


def list_samples(store_root: Path | str, job_id: str) -> list[SampleFile]:
    """The job's sample pictures, by epoch then name (empty before the first epoch ends)."""
    folder = job_dir(store_root, job_id) / SAMPLES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if SAMPLE_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            found.append(_sample_file(path.name, path.stat().st_size))
    return _by_epoch(found)


def _check_sample_name(name: str) -> None:
    if not SAMPLE_NAME.fullmatch(name) or ".." in name:
        raise InvalidSampleName(f"invalid sample name {name!r}: expected a .png file name"
                                " from GET /jobs/{id}/samples")


def _sample_file(name: str, size: int) -> SampleFile:
    epoch = _EPOCH.search(name)
    return SampleFile(name, int(epoch.group(1)) if epoch else None, size)


def _by_epoch(found: list[SampleFile]) -> list[SampleFile]:
    return sorted(found, key=lambda s: (s.epoch is None, s.epoch or 0, s.name))


def sample_path(store_root: Path | str, job_id: str, name: str) -> Path:
    """The file of one sample; ``InvalidSampleName`` or ``SampleNotFound`` otherwise."""
    _check_sample_name(name)
    path = job_dir(store_root, job_id) / SAMPLES_DIR / name
    if not path.is_file() or path.is_symlink():
        raise SampleNotFound(f"job {job_id} has no sample {name!r}")
    return path


class JobArtifacts:
    """Job files in a local store directory: the worker writes them where readers look."""

    def __init__(self, store_root: Path | str) -> None:
        self.root = Path(store_root)

    def work_dir(self, job_id: str) -> Path:
        """The local directory a job's trainer writes into (``<root>/jobs/<job_id>``)."""
        return job_dir(self.root, job_id)

    def list_samples(self, job_id: str) -> list[SampleFile]:
        return list_samples(self.root, job_id)

    def sample_path(self, job_id: str, name: str) -> Path:
        return sample_path(self.root, job_id, name)

    def has_checkpoint(self, job_id: str) -> bool:
        return has_checkpoint(self.root, job_id)

    def copy_checkpoint(self, source_job: str, target_job: str) -> None:
        copy_checkpoint(self.root, source_job, target_job)

    def push(self, job_id: str, work_dir: Path) -> None:
        """Publish what the trainer wrote in ``work_dir``: nothing to do, it is in place."""

    def pull(self, job_id: str, work_dir: Path) -> None:
        """Bring a resumable checkpoint into ``work_dir``: it is already there."""

    def discard(self, job_id: str) -> None:
        """Remove every file of the job (a job that was never sent)."""
        shutil.rmtree(job_dir(self.root, job_id), ignore_errors=True)


class S3JobArtifacts(JobArtifacts):
    """Job files as objects ``jobs/<job_id>/...`` in the object store; ``root`` is this
    process's own directory (work directories, and the samples it fetched)."""

    def __init__(self, objects: ObjectStore, cache_dir: Path | str) -> None:
        super().__init__(cache_dir)
        self.objects = objects
        self.fetched = self.root / "artifacts" / "jobs"
        # What this process already uploaded: (job, file) -> (size, mtime_ns).
        self._pushed: dict[tuple[str, str], tuple[int, int]] = {}

    @staticmethod
    def _key(job_id: str, name: str = "") -> str:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise SampleNotFound(f"job {job_id!r} has no files")  # never a key outside jobs/
        return f"jobs/{job_id}/{name}"

    def list_samples(self, job_id: str) -> list[SampleFile]:
        prefix = self._key(job_id, f"{SAMPLES_DIR}/")
        found = [_sample_file(key[len(prefix):], size)
                 for key, size in self.objects.list(prefix)
                 if SAMPLE_NAME.fullmatch(key[len(prefix):])]
        return _by_epoch(found)

    def sample_path(self, job_id: str, name: str) -> Path:
        """The sample, fetched into this process's cache (again when its size changed)."""
        _check_sample_name(name)
        key = self._key(job_id, f"{SAMPLES_DIR}/{name}")
        size = self.objects.size(key)
        if size is None:
            raise SampleNotFound(f"job {job_id} has no sample {name!r}")
        path = self.fetched / job_id / SAMPLES_DIR / name
        if not (path.is_file() and path.stat().st_size == size):
            self.objects.download_file(key, path)
        return path

    def has_checkpoint(self, job_id: str) -> bool:
        return self.objects.size(self._key(job_id, CHECKPOINT_FILE)) is not None

    def copy_checkpoint(self, source_job: str, target_job: str) -> None:
        """Copy the checkpoint (and best weights) to ``target_job``'s keys; a PUT is
        atomic, so a reader never sees half a file."""
        scratch = self.root / "artifacts" / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            for name in RESUME_FILES:
                source = self._key(source_job, name)
                if self.objects.size(source) is not None:
                    local = Path(tmp) / name
                    self.objects.download_file(source, local)
                    self.objects.upload_file(self._key(target_job, name), local)

    def push(self, job_id: str, work_dir: Path) -> None:
        """Upload the checkpoint and best weights when they changed since this process
        last pushed them, and every sample the object store lacks (or has at another
        size). Called by the worker after each epoch and when the job ends."""
        for name in RESUME_FILES:
            path = work_dir / name
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                stamp = (stat.st_size, stat.st_mtime_ns)
                if self._pushed.get((job_id, name)) != stamp:
                    self.objects.upload_file(self._key(job_id, name), path)
                    self._pushed[(job_id, name)] = stamp
        folder = work_dir / SAMPLES_DIR
        if not folder.is_dir():
            return
        remote = {s.name: s.bytes for s in self.list_samples(job_id)}
        for path in sorted(folder.iterdir()):
            if (SAMPLE_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink()
                    and remote.get(path.name) != path.stat().st_size):
                self.objects.upload_file(self._key(job_id, f"{SAMPLES_DIR}/{path.name}"),
                                         path)

    def pull(self, job_id: str, work_dir: Path) -> None:
        """Download the checkpoint and best weights that ``work_dir`` lacks, so a job
        that stopped on one host resumes on another."""
        for name in RESUME_FILES:
            path = work_dir / name
            key = self._key(job_id, name)
            if not path.is_file() and self.objects.size(key) is not None:
                self.objects.download_file(key, path)
                stat = path.stat()
                self._pushed[(job_id, name)] = (stat.st_size, stat.st_mtime_ns)

    def discard(self, job_id: str) -> None:
        self.objects.delete_prefix(self._key(job_id))
        shutil.rmtree(self.fetched / job_id, ignore_errors=True)
        super().discard(job_id)


def open_artifacts(settings: Settings) -> JobArtifacts:
    """The job files of the configured store: its directory, or its object store."""
    from model_store.factory import object_store

    objects = object_store(settings)
    if objects is None:
        return JobArtifacts(settings.store_dir)
    return S3JobArtifacts(objects, settings.store_dir)
