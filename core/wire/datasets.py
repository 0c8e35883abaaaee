"""Datasets on the wire: a dataset as listed, and its intake report (what intake saw,
accepted and skipped).

These mirror the store's files (model_store/dataset_schema.py: meta.json, report.json) field
for field today; they are the contract, the store's are its file format, and
service/views.py maps one onto the other."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.task_names import TaskName


class SkippedFile(BaseModel):
    path: str  # relative to the dataset root (after a common top folder was stripped)
    reason: str


class SizeStats(BaseModel):
    """Sizes of the samples' input images (photo / image / path), in pixels."""

    min_width: int
    max_width: int
    mean_width: float
    min_height: int
    max_height: int
    mean_height: float


class IntakeReport(BaseModel):
    task: TaskName
    can_train: bool
    # Why it cannot train (empty when it can).
    problems: list[str] = Field(default_factory=list)
    # Things worth knowing that do not block training (an empty class left out, ...).
    warnings: list[str] = Field(default_factory=list)
    # "given": the archive had val/ (or test/) folders; "auto": intake split it (seeded).
    split_source: Literal["given", "auto"] = "auto"
    # Samples per split ("train", "val", and "test" where the layout has one).
    counts: dict[str, int] = Field(default_factory=dict)
    # Labelled layouts only: class -> split -> samples.
    class_counts: dict[str, dict[str, int]] | None = None
    image_size: SizeStats | None = None
    files_seen: int = 0  # every regular file extracted (junk like __MACOSX never counts)
    files_accepted: int = 0  # files referenced by the index
    # Extracted files the scan could not use, with the reason (the first
    # dataset_report_max_items of them; files_skipped counts all). They are not kept.
    skipped: list[SkippedFile] = Field(default_factory=list)
    files_skipped: int = 0
    # Entries never extracted: not image files, or outside the task's layout folders.
    files_ignored: int = 0
    ignored: list[str] = Field(default_factory=list,
                               description="a sample of the ignored names (capped)")
    truncated: bool = Field(False, description="a list above holds only its first entries;"
                            " the counts cover every file")
    stripped_folder: str | None = None  # the single top-level folder removed, if any


class DatasetMeta(BaseModel):
    id: str
    task: TaskName
    name: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    bytes: int  # size of data/ on disk
    filename: str  # the uploaded file's name, as the client sent it
    synthetic: bool = False  # made by toonforge itself (demo / test data), not uploaded
    counts: dict[str, int] = Field(default_factory=dict)
    # The API key id that uploaded it (per-key dataset quotas); None: anonymous or older.
    owner: str | None = None


class IngestResult(BaseModel):
    meta: DatasetMeta
    report: IntakeReport
