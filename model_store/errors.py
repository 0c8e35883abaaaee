"""Errors raised by the model store and the dataset intake.

Each carries its stable ``code`` and HTTP status (core/errors.py); the API renders any of
them with one exception handler, and the worker records the same code on a failed job.
"""

from __future__ import annotations

from typing import Any

from core.errors import DomainError


class StoreError(DomainError):
    """Base class for model-store errors."""


class ModelNotFound(StoreError):
    code = "model_not_found"
    http_status = 404


class VersionNotFound(StoreError):
    code = "version_not_found"
    http_status = 404


class NoActiveVersion(StoreError):
    code = "no_active_version"
    http_status = 503


class ActivationRefused(StoreError):
    """The version exists but may not become active (e.g. it failed ONNX parity)."""

    code = "activation_refused"
    http_status = 409


class VersionCorrupt(ActivationRefused):
    """A version's files do not match the sha256 its manifest records (or are missing);
    ``details.file`` names the file (never a server path)."""

    code = "version_corrupt"
    http_status = 409

    def __init__(self, ref: str, file: str | None, problem: str) -> None:
        super().__init__(f"{ref} is corrupt: {problem}", {"version": ref, "file": file})
        self.file = file


class ManifestCorrupt(VersionCorrupt):
    """A version's manifest.json cannot be read (truncated, not JSON, not a manifest): that
    version is corrupt, and only it (the model's other versions serve and list as usual)."""

    def __init__(self, ref: str, problem: str) -> None:
        super().__init__(ref, "manifest.json", f"manifest.json {problem}")


class StoreMissing(StoreError):
    """A command that reads the store was pointed at a directory that does not exist."""

    code = "store_missing"
    http_status = 404


class InvalidName(StoreError):
    # An invalid name cannot exist in the store: answered as for any unknown model.
    code = "model_not_found"
    http_status = 404


class ManifestInvalid(StoreError):
    """A model's pointer file (S3 active.json) cannot be read."""

    code = "model_not_ready"
    http_status = 503


# ---- datasets (model_store/datasets.py, archives.py, dataset_scan.py, intake.py)
class DatasetError(StoreError):
    """Base class for dataset intake and dataset-store errors."""

    code = "dataset_invalid"
    http_status = 422


class DatasetNotFound(DatasetError):
    code = "dataset_not_found"
    http_status = 404


class DatasetExists(DatasetError):
    code = "dataset_conflict"
    http_status = 409


class DatasetInUse(DatasetError):
    """The dataset is referenced by a job that has not finished; it may not be deleted."""

    code = "dataset_conflict"
    http_status = 409


class UploadTooLarge(DatasetError):
    code = "too_large"
    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the {limit}-byte limit")
        self.limit = limit


class NotAnArchive(DatasetError):
    """The upload is not a zip or tar (detected by content, not by name), or is corrupt."""

    code = "unsupported_media_type"
    http_status = 415


class ArchiveUnsafe(DatasetError):
    """An entry breaks a safety rule; ``entry`` and ``rule`` say which."""

    code = "archive_unsafe"
    http_status = 422

    def __init__(self, entry: str, rule: str) -> None:
        super().__init__(f"archive entry {entry!r} refused: {rule}",
                         {"entry": entry, "rule": rule})
        self.entry = entry
        self.rule = rule


class ArchiveTooLarge(DatasetError):
    """Too many entries, too many extracted bytes, or an entry that inflates too much."""

    code = "archive_too_large"
    http_status = 422


class DatasetInvalid(DatasetError):
    """The dataset cannot train; ``report`` (an IntakeReport) says why."""

    code = "dataset_invalid"
    http_status = 422

    def __init__(self, report: Any) -> None:
        problems = getattr(report, "problems", [])
        dump = report.model_dump(mode="json") if hasattr(report, "model_dump") else {}
        super().__init__("dataset cannot train: " + "; ".join(problems or ["see the report"]),
                         {"report": dump})
        self.report = report
