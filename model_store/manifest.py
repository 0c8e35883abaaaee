"""The manifest that sits beside every model version (``manifest.json``).

It says everything the API needs to serve the version without importing the code that
trained it: task, architecture, graph files and tensor names, preprocessing, labels,
parity evidence, metrics and lineage, and the sha256 of every file.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.registry import TaskName

SCHEMA_VERSION = 1


class TensorSpec(BaseModel):
    name: str
    shape: list[int | str]
    dtype: str = "float32"


class GraphSpec(BaseModel):
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class ParityReport(BaseModel):
    """Evidence that the ONNX graphs compute what the PyTorch module computes."""

    passed: bool
    tolerance: float
    max_abs_error: dict[str, float] = Field(
        default_factory=dict, description="Worst |ORT - torch| per graph output."
    )
    inputs: str = Field("", description="How the fixed parity inputs were made.")
    torch_version: str = ""
    onnxruntime_version: str = ""
    detail: str = ""


class Lineage(BaseModel):
    source: str = Field(description="'import', 'finetune' or 'scratch'.")
    checkpoint: dict[str, str] = Field(
        default_factory=dict, description="Imported files: name -> sha256."
    )
    dataset: str | None = None
    parent: str | None = Field(None, description="'model@n' the weights started from.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    synthetic_data: bool = False


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    model: str
    version: int
    task: TaskName
    arch: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    description: str = ""
    graphs: dict[str, GraphSpec]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] | None = None
    parity: ParityReport
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Hash every file of a version directory except the manifest itself."""
    entries: dict[str, FileEntry] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != "manifest.json":
            entries[path.name] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return entries
