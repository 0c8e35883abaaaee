"""The manifest that sits beside every model version (``manifest.json``).

It says everything the API needs to serve the version without importing the code that
trained it: task, architecture, graph files and tensor names, preprocessing, labels,
parity evidence, metrics and lineage, and the sha256 of every file.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import tasks  # noqa: F401  (registers the built-in families, the names TaskName accepts)
from core.task_names import TaskName
from model_store.errors import ManifestCorrupt

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


class OutputParity(BaseModel):
    """One graph output's parity figures under the relative rule (``ParityReport.rule``)."""

    max_abs_error: float = Field(description="Worst |ORT - torch| over the parity inputs.")
    scale: float = Field(description="max |torch output| over the parity inputs.")
    atol: float
    rtol: float
    bound: float = Field(description="atol + rtol * scale: the most max_abs_error may be.")
    passed: bool


class ParityReport(BaseModel):
    """Evidence that the ONNX graphs compute what the PyTorch module computes.

    ``rule`` "relative" (versions published since the rule changed): every output passes when
    max |ORT - torch| <= atol + rtol * max |torch|, with atol = ``tolerance`` and ``rtol``;
    ``outputs`` holds each output's figures. "absolute" (older manifests, which lack the
    field): max |ORT - torch| <= ``tolerance``. docs/ARCHITECTURE.md says why float32 needs
    the relative term."""

    passed: bool
    tolerance: float = Field(description="The absolute term (atol) of the bound.")
    rule: Literal["absolute", "relative"] = "absolute"
    rtol: float = Field(0.0, description="The relative term: times max |torch output|.")
    max_abs_error: dict[str, float] = Field(
        default_factory=dict, description="Worst |ORT - torch| per graph output."
    )
    outputs: dict[str, OutputParity] = Field(
        default_factory=dict, description="Per graph output: error, scale and bound."
    )
    inputs: str = Field("", description="How the fixed parity inputs were made.")
    torch_version: str = ""
    onnxruntime_version: str = ""
    detail: str = ""


class VariantRecord(BaseModel):
    """A reduced-precision variant of a version's graphs (``Manifest.variants["int8"]``):
    how it was made, how close it stayed to fp32 on held-out inputs, and whether it serves.

    A refused variant ships no graph file: the fp32 graphs serve and ``reason`` says why.
    The graph files, when kept, are hashed in ``Manifest.files`` like every other file."""

    precision: str = Field(description="'int8'.")
    passed: bool
    reason: str = Field("", description="Why it was kept or refused (a failure's error).")
    graphs: dict[str, str] = Field(
        default_factory=dict, description="Graph role -> file of this variant (kept only)."
    )
    fidelity: dict[str, float] = Field(
        default_factory=dict, description="'role.metric' -> value measured against fp32."
    )
    limits: dict[str, str] = Field(
        default_factory=dict, description="metric -> the bound it had to meet, e.g. '<= 0.0039'."
    )
    speedup: float | None = Field(
        None, description="fp32 / int8 time of the main graph, batch 1, on the publishing host."
    )
    fp32_ms: float | None = None
    int8_ms: float | None = None
    calibration: str = Field("", description="What the calibration and held-out inputs were.")
    calibration_inputs: int = 0
    held_out_inputs: int = 0
    method: str = ""
    onnxruntime_version: str = ""
    seconds: float = Field(0.0, description="Time the variant took to build and gate.")


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
    # precision -> variant ("int8"); empty for versions published before variants existed.
    variants: dict[str, VariantRecord] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


def parse_manifest(data: bytes, name: str, version: int) -> Manifest:
    """The manifest in ``data``; ``ManifestCorrupt`` saying what is wrong with it (the
    fields and the kind of fault, never the file's content nor the validator's internals)."""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        ref = f"{name}@{int(version)}"
        if any(e["type"] == "json_invalid" for e in errors):
            raise ManifestCorrupt(ref, "is not valid JSON (truncated or malformed)") from None
        faults = [f"{'.'.join(str(p) for p in e['loc']) or 'the document'}:"
                  f" {e['msg'].lower()}" for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ManifestCorrupt(ref, "is not a valid manifest: " + "; ".join(faults) + more
                              ) from None


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
