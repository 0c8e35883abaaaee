"""Strict import of checkpoint files into the registry's architectures: the generic part.

Every import is strict: a file whose tensor names or shapes differ from the architecture's
layout raises :class:`CheckpointMismatch` listing what is missing, unexpected or of the wrong
shape, never a half-loaded model. A file that cannot be read at all raises
:class:`CheckpointUnreadable` naming the file; options that cannot make a version (labels
that do not fit, a missing part) raise :class:`ImportRefused`. All derive from
:class:`CheckpointError` (a ``ValueError``).

Which files an architecture reads, and how, is its family module's business
(``Architecture.official_parts`` and ``load_official``); :func:`load_official` here checks the
parts and dispatches. The helpers below read PyTorch files: wrappers ``{"state_dict": ...}``
/ ``{"model": ...}`` and DataParallel ``module.`` prefixes are unwrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.nets.registry import ImportedWeights, get_arch

_SHOWN = 10

Shape = tuple[int, ...]


class CheckpointError(ValueError):
    """Base class of every checkpoint-import failure."""


class CheckpointUnreadable(CheckpointError):
    """The file is not a readable checkpoint (truncated, wrong format, not a state dict)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read checkpoint {self.path.name!r}: {reason}")


class ImportRefused(CheckpointError):
    """The files or options cannot make a version; nothing was written."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint's tensors do not match the architecture's layout."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        shape_mismatch: list[tuple[str, Shape, Shape]],
        *,
        source: str = "",
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatch = list(shape_mismatch)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        def fmt_shape(s: Shape) -> str:
            return "x".join(map(str, s)) if s else "scalar"

        parts = []
        if self.missing:
            parts.append(
                f"{len(self.missing)} missing key(s): " + ", ".join(self.missing[:_SHOWN])
                + (" ..." if len(self.missing) > _SHOWN else "")
            )
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected key(s): "
                + ", ".join(self.unexpected[:_SHOWN])
                + (" ..." if len(self.unexpected) > _SHOWN else "")
            )
        if self.shape_mismatch:
            parts.append(
                f"{len(self.shape_mismatch)} shape mismatch(es): "
                + ", ".join(
                    f"{n} (expected {fmt_shape(e)}, got {fmt_shape(g)})"
                    for n, e, g in self.shape_mismatch[:_SHOWN]
                )
                + (" ..." if len(self.shape_mismatch) > _SHOWN else "")
            )
        where = f" in {self.source}" if self.source else ""
        return f"checkpoint does not match the architecture{where}: " + "; ".join(parts)


def compare_state_dict(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, Any]
) -> tuple[list[str], list[str], list[tuple[str, Shape, Shape]]]:
    """Missing, unexpected and wrongly shaped names of ``got`` against ``expected``."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = []
    for k, ref in expected.items():
        if k in got:
            g = tuple(np.shape(got[k])) if not torch.is_tensor(got[k]) else tuple(got[k].shape)
            if tuple(ref.shape) != g:
                shapes.append((k, tuple(ref.shape), g))
    return missing, unexpected, shapes


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = ""
) -> nn.Module:
    """``module.load_state_dict(strict=True)`` that reports every problem at once as a
    :class:`CheckpointMismatch` (PyTorch's RuntimeError stops at shapes and is hard to read)."""
    missing, unexpected, shapes = compare_state_dict(module.state_dict(), state_dict)
    if missing or unexpected or shapes:
        raise CheckpointMismatch(missing, unexpected, shapes, source=source)
    module.load_state_dict(dict(state_dict), strict=True)
    return module


# -- reading files ---------------------------------------------------------------------------


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a PyTorch file (unwrapped); ``CheckpointUnreadable`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointUnreadable(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "unreadable"
        from worker.load_failures import describe_load_failure

        raise CheckpointUnreadable(path, describe_load_failure(path, exc)) from exc
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Training scripts often save {"state_dict": ...} or {"model": ...}; a bare module is not
    # loadable with weights_only and already failed above.
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            for key in ("state_dict", "model", "model_state_dict", "net"):
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointUnreadable(path, "not a state dict of tensors")
    sd = {str(k): v for k, v in obj.items()}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _is_tensor_dict(obj: Mapping[Any, Any]) -> bool:
    return len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def fill_num_batches_tracked(
    module: nn.Module, sd: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    # Checkpoints from PyTorch < 0.4.1 have no BN counters; the counter only matters with
    # momentum=None, so zero is the faithful value.
    out = dict(sd)
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in out:
            prefix = k[: -len("num_batches_tracked")]
            if prefix + "running_mean" in out:
                out[k] = torch.zeros_like(v)
    return out


def load_torch_file_strict(module: nn.Module, path: Path, *, source: str = "") -> nn.Module:
    """Load the state dict in ``path`` into ``module`` strictly."""
    path = Path(path)
    return load_state_dict_strict(module, read_torch_file(path), source=source or path.name)


def read_labels(path: Path) -> list[str]:
    """One label per line (blank lines ignored); ``ImportRefused`` when there is none."""
    labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not labels:
        raise ImportRefused(f"{path} holds no labels (one label per line expected)")
    return labels


# -- entry point -------------------------------------------------------------------------------


def load_official(
    arch: str, parts: Mapping[str, Path | str], labels_file: Path | str | None = None,
    task: str | None = None,
) -> ImportedWeights:
    """Build ``arch`` and load its official checkpoint file(s) strictly.

    ``parts`` maps the part names of ``Architecture.official_parts`` to files; ``labels_file``
    names the classes where the architecture needs them. The module comes back in eval mode.
    """
    architecture = get_arch(arch, task)
    if architecture.loader is None:
        raise CheckpointError(f"architecture {arch!r} has no official checkpoint format")
    wanted, given = set(architecture.official_parts), set(parts)
    if wanted != given:
        raise CheckpointError(
            f"{arch!r} needs checkpoint part(s) {sorted(wanted)}, got {sorted(given)}"
        )
    paths = {k: Path(v) for k, v in parts.items()}
    imported = architecture.loader(paths, Path(labels_file) if labels_file is not None else None)
    imported.module.eval()
    return imported
