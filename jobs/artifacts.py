"""Where a job's files live in the store, and safe reads of its sample pictures.

    <store>/jobs/<job_id>/checkpoint.pt   what a redelivered or cancelled job keeps
    <store>/jobs/<job_id>/best.pt
    <store>/jobs/<job_id>/samples/*.png   the pictures the trainer draws after each epoch

Torch-free: the worker writes these, the API lists and serves the samples.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidParameter
from jobs.errors import JobError

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
            epoch = _EPOCH.search(path.name)
            found.append(SampleFile(path.name, int(epoch.group(1)) if epoch else None,
                                    path.stat().st_size))
    return sorted(found, key=lambda s: (s.epoch is None, s.epoch or 0, s.name))


def sample_path(store_root: Path | str, job_id: str, name: str) -> Path:
    """The file of one sample; ``InvalidSampleName`` or ``SampleNotFound`` otherwise."""
    if not SAMPLE_NAME.fullmatch(name) or ".." in name:
        raise InvalidSampleName(f"invalid sample name {name!r}: expected a .png file name"
                                " from GET /jobs/{id}/samples")
    path = job_dir(store_root, job_id) / SAMPLES_DIR / name
    if not path.is_file() or path.is_symlink():
        raise SampleNotFound(f"job {job_id} has no sample {name!r}")
    return path
