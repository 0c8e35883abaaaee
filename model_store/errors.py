"""Errors raised by the model store. The API maps them to HTTP statuses in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for model-store errors."""


class ModelNotFound(StoreError):
    pass


class VersionNotFound(StoreError):
    pass


class NoActiveVersion(StoreError):
    pass


class ActivationRefused(StoreError):
    """The version exists but may not become active (e.g. it failed ONNX parity)."""


class InvalidName(StoreError):
    pass


class ManifestInvalid(StoreError):
    pass


# ---- datasets (model_store/datasets.py, archives.py, dataset_scan.py, intake.py)
class DatasetError(StoreError):
    """Base class for dataset intake and dataset-store errors."""


class DatasetNotFound(DatasetError):
    pass


class DatasetExists(DatasetError):
    pass


class DatasetInUse(DatasetError):
    """The dataset is referenced by a job that has not finished; it may not be deleted."""


class UploadTooLarge(DatasetError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the {limit}-byte limit")
        self.limit = limit


class NotAnArchive(DatasetError):
    """The upload is not a zip or tar (detected by content, not by name), or is corrupt."""


class ArchiveUnsafe(DatasetError):
    """An entry breaks a safety rule; ``entry`` and ``rule`` say which."""

    def __init__(self, entry: str, rule: str) -> None:
        super().__init__(f"archive entry {entry!r} refused: {rule}")
        self.entry = entry
        self.rule = rule


class ArchiveTooLarge(DatasetError):
    """Too many entries, too many extracted bytes, or an entry that inflates too much."""


class DatasetInvalid(DatasetError):
    """The dataset cannot train; ``report`` (an IntakeReport) says why."""

    def __init__(self, report: object) -> None:
        problems = getattr(report, "problems", [])
        super().__init__("dataset cannot train: " + "; ".join(problems or ["see the report"]))
        self.report = report
