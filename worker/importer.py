"""``toonforge import``: official checkpoint file(s) -> a new, proven store version.

Every check that can fail runs before anything is written: the task/arch pairing, the model
name, strict loading of every tensor, the labels, and the ONNX parity proof. What the files
are and how they load is the architecture's (``Architecture.official_parts`` and its
``load_official`` hook); this module only drives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_store.manifest import Lineage, Manifest, sha256_file
from model_store.store import ModelStore, validate_name
from tasks import get_task
from worker.nets.checkpoints import ImportRefused, load_official
from worker.nets.registry import get_arch
from worker.training.publish import publish_version

__all__ = ["ImportRefused", "import_checkpoint", "parity_summary"]


def parity_summary(manifest: Manifest) -> str:
    """One line of parity evidence for the import/pull commands: each output's worst error
    against its bound (atol + rtol * scale)."""
    parity = manifest.parity
    if parity.outputs:
        figures = ", ".join(f"{k}={o.max_abs_error:.2e} <= {o.bound:.2e}"
                            for k, o in parity.outputs.items())
        return (f"parity passed: {figures} (bound {parity.tolerance:g} + {parity.rtol:g}"
                " * max|output|)")
    figures = ", ".join(f"{k}={v:.2e}" for k, v in parity.max_abs_error.items())
    return f"parity passed: {figures} <= {parity.tolerance}"


def import_checkpoint(
    store: ModelStore,
    *,
    task: str,
    arch: str,
    parts: Mapping[str, Path],
    model: str,
    labels: Path | None = None,
    activate: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Load ``parts`` (part name -> file, the names of ``Architecture.official_parts``) as
    ``arch``, prove the export and publish it as the next version of ``model``."""
    task = get_task(task).name
    architecture = get_arch(arch, task)
    if architecture.task != task:
        raise ImportRefused(f"architecture {arch!r} serves task {architecture.task!r},"
                            f" not {task!r}")
    validate_name(model)
    missing = [part for part in architecture.official_parts if part not in parts]
    if missing:
        raise ImportRefused(f"{arch} needs the checkpoint part(s) {missing} too")
    for path in [*parts.values(), *([labels] if labels is not None else [])]:
        if not Path(path).is_file():
            raise ImportRefused(f"{path} does not exist or is not a file")

    imported = load_official(arch, parts, labels, task=task)
    files = {Path(path).name: sha256_file(Path(path)) for path in parts.values()}
    return publish_version(
        store,
        model_name=model,
        arch_name=arch,
        task=task,
        module=imported.module,
        arch_kwargs=imported.arch_kwargs,
        labels=imported.labels,
        artifacts=imported.artifacts,
        lineage=Lineage(source="import", checkpoint=files),
        activate=activate,
        extra=extra,
    )
