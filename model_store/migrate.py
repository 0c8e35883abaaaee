"""Copy a local store directory into an S3 store (``toonforge store push``).

Every version keeps its number and its manifest byte for byte, each model its active
pointer and activation history, each dataset its id, files and JSON. The copy is
idempotent and safe to re-run after a failure: what the S3 store already holds is skipped
(conditional creates, so a version or pointer written meanwhile by someone else wins), and
a version is copied files first, manifest last, as ``S3ModelStore.publish`` does. Job
files (checkpoints, samples) are not copied: they belong to finished jobs of the old
deployment.

A local file that no longer matches its manifest is uploaded as it is (under its own
hash), so the S3 copy of that version is refused exactly as the local one is
(``VersionCorrupt``): the copy never launders a damaged version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_store.datasets import META_FILE, DatasetStore
from model_store.errors import DatasetExists, ModelNotFound
from model_store.files import MANIFEST_FILE
from model_store.objects import Conflict
from model_store.s3_datasets import S3DatasetStore, dataset_prefix
from model_store.s3_models import JSON, S3ModelStore, active_key, manifest_key, put_bytes_blob
from model_store.store import ModelStore


@dataclass
class PushSummary:
    """What ``push_local_store`` did ("model@n", model names, dataset ids)."""

    versions_copied: list[str] = field(default_factory=list)
    versions_skipped: list[str] = field(default_factory=list)  # already there, same manifest
    # The S3 store has another manifest under the same number: left alone, not copied.
    versions_conflicting: list[str] = field(default_factory=list)
    # "model@n: file": a local file missing or not matching its manifest (copied as is).
    corrupt_files: list[str] = field(default_factory=list)
    pointers_copied: list[str] = field(default_factory=list)
    pointers_skipped: list[str] = field(default_factory=list)  # the S3 store had one
    datasets_copied: list[str] = field(default_factory=list)
    datasets_skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def push_local_store(local_root: Path, models: S3ModelStore,
                     datasets: S3DatasetStore) -> PushSummary:
    """Copy every version, active pointer (with its history) and dataset of the store
    directory ``local_root`` into ``models`` / ``datasets``; ``StoreMissing`` when there
    is no store there."""
    local = ModelStore(local_root, create=False)
    summary = PushSummary()
    for name in local.model_names():
        try:
            numbers = local.versions(name)
        except ModelNotFound:
            continue  # a line whose first version was never published
        for number in numbers:
            _push_version(local, models, name, number, summary)
        _push_pointer(local, models, name, summary)
    local_datasets = DatasetStore(local_root)
    for dataset_id in local_datasets.ids():
        if datasets.objects.size(f"{dataset_prefix(dataset_id)}{META_FILE}") is not None:
            summary.datasets_skipped.append(dataset_id)
            continue
        try:
            datasets.publish(local_datasets.path(dataset_id), local_datasets.get(dataset_id),
                             local_datasets.report(dataset_id),
                             local_datasets.index(dataset_id))
        except DatasetExists:
            summary.datasets_skipped.append(dataset_id)
        else:
            summary.datasets_copied.append(dataset_id)
    return summary


def _push_version(local: ModelStore, models: S3ModelStore, name: str, number: int,
                  summary: PushSummary) -> None:
    ref, key = f"{name}@{number}", manifest_key(name, number)
    vdir = local.version_dir(name, number)
    data = (vdir / MANIFEST_FILE).read_bytes()
    manifest = local.manifest(name, number)  # ManifestInvalid stops the copy, named
    there = models.objects.get(key)
    if there is not None:
        (summary.versions_skipped if there == data else summary.versions_conflicting
         ).append(ref)
        return
    for file, entry in sorted(manifest.files.items()):
        path = vdir / file
        if "/" in file or file.startswith(".") or not path.is_file():
            summary.corrupt_files.append(f"{ref}: {file}")
            continue
        if models.objects.put_blob(path) != entry.sha256:  # hashes the bytes it uploads
            summary.corrupt_files.append(f"{ref}: {file}")
    put_bytes_blob(models.objects, data, models.staging_dir)
    try:
        models.objects.put(key, data, if_absent=True, content_type=JSON)
    except Conflict:  # written meanwhile
        there = models.objects.get(key)
        (summary.versions_skipped if there == data else summary.versions_conflicting
         ).append(ref)
        return
    summary.versions_copied.append(ref)


def _push_pointer(local: ModelStore, models: S3ModelStore, name: str,
                  summary: PushSummary) -> None:
    active, history = local.active_version(name), local.history(name)
    if active is None and not history:
        return
    data = json.dumps({"version": active, "history": history}).encode()
    try:
        models.objects.put(active_key(name), data, if_absent=True, content_type=JSON)
    except Conflict:  # the S3 store's own activations win over the old directory's
        summary.pointers_skipped.append(name)
    else:
        summary.pointers_copied.append(name)

