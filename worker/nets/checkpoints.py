"""Import of the official (published) checkpoint files into the registry's architectures.

Every import is strict: a file whose tensor names or shapes differ from the architecture's
layout raises :class:`CheckpointMismatch` listing what is missing, unexpected or of the wrong
shape, never a half-loaded model. A file that cannot be read at all raises
:class:`CheckpointUnreadable` naming the file. Both derive from :class:`CheckpointError`
(a ``ValueError``).

Supported files, by architecture (part names are ``ArchSpec.official_parts``):

- ``u2net`` / ``u2netp`` (part ``""``): ``u2net.pth`` / ``u2netp.pth`` state dicts.
- ``googlenet`` (``""``): torchvision ``googlenet-1378be20.pth`` (with the aux heads), or a
  fine-tuned torchvision file with another class count (inferred from ``fc.weight``).
- ``dcgan`` (``"netg"``, ``"netd"``): pytorch-book ``netg_200.pth`` / ``netd_200.pth``; old
  files without ``num_batches_tracked`` get zeros.
- ``dctnet`` (``""``): a ``.npz`` holding the TF variables of ``unet_generator`` under their
  TF names (``generator/Conv/weights`` ...), HWIO weights. Frozen ``.pb`` graphs are not read:
  convert them to ``.npz`` first.

Wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` and DataParallel ``module.`` prefixes
are unwrapped.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.nets.registry import create_model, get_arch

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


def _torch_file(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointUnreadable(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "unreadable"
        raise CheckpointUnreadable(path, f"{type(exc).__name__}: {exc}".strip()[:300]) from exc
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


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def _fill_num_batches_tracked(
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


# -- DCT-Net (TensorFlow variables) ------------------------------------------------------------

_TF_CONV = re.compile(r"^generator/Conv(?:_(\d+))?/(weights|biases)$")
_TF_BLOCK = re.compile(r"^generator/block_(\d+)/(conv[12])/(weights|biases)$")


def tf_to_torch_name(tf_name: str) -> str | None:
    """PyTorch name of a DCT-Net TF variable in the ``dctnet`` model, or None if foreign."""
    name = tf_name.split(":")[0]
    m = _TF_CONV.match(name)
    if m:
        idx = m.group(1) or "0"
        kind = "weight" if m.group(2) == "weights" else "bias"
        return f"generator.conv{idx}.{kind}"
    m = _TF_BLOCK.match(name)
    if m:
        kind = "weight" if m.group(3) == "weights" else "bias"
        return f"generator.blocks.{m.group(1)}.{m.group(2)}.{kind}"
    return None


def torch_to_tf_name(torch_name: str) -> str:
    m = re.match(r"^generator\.conv(\d+)\.(weight|bias)$", torch_name)
    kind = {"weight": "weights", "bias": "biases"}
    if m:
        conv = "Conv" if m.group(1) == "0" else f"Conv_{m.group(1)}"
        return f"generator/{conv}/{kind[m.group(2)]}"
    m = re.match(r"^generator\.blocks\.(\d+)\.(conv[12])\.(weight|bias)$", torch_name)
    if m:
        return f"generator/block_{m.group(1)}/{m.group(2)}/{kind[m.group(3)]}"
    raise KeyError(torch_name)


def _tf_shape(torch_shape: Shape) -> Shape:
    # OIHW -> HWIO.
    if len(torch_shape) == 4:
        o, i, h, w = torch_shape
        return (h, w, i, o)
    return torch_shape


def _load_dctnet(model: nn.Module, path: Path) -> nn.Module:
    path = Path(path)
    if path.suffix == ".pb":
        raise CheckpointUnreadable(
            path, "frozen TensorFlow graphs are not supported: convert to .npz of the variables"
        )
    if not path.is_file():
        raise CheckpointUnreadable(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            tf_vars = {k.split(":")[0]: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointUnreadable(path, f"{type(exc).__name__}: {exc}"[:300]) from exc

    # Compare in TF terms so the error names the variables as they are in the file.
    expected_tf = {torch_to_tf_name(k): v for k, v in model.state_dict().items()}
    ref = {k: torch.empty(_tf_shape(tuple(v.shape))) for k, v in expected_tf.items()}
    missing, unexpected, shapes = compare_state_dict(ref, tf_vars)
    if missing or unexpected or shapes:
        raise CheckpointMismatch(missing, unexpected, shapes, source=path.name)
    sd = {}
    for tf_name, arr in tf_vars.items():
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if t.ndim == 4:
            t = t.permute(3, 2, 0, 1).contiguous()
        torch_name = tf_to_torch_name(tf_name)
        assert torch_name is not None
        sd[torch_name] = t
    return load_state_dict_strict(model, sd, source=path.name)


# -- entry point -------------------------------------------------------------------------------


def load_official(arch: str, parts: Mapping[str, Path | str]) -> nn.Module:
    """Build ``arch`` and load its official checkpoint file(s) strictly.

    ``parts`` maps the part names of ``ArchSpec.official_parts`` to files. Returns the model
    in eval mode.
    """
    spec = get_arch(arch)
    if not spec.official_parts:
        raise CheckpointError(f"architecture {arch!r} has no official checkpoint format")
    wanted, given = set(spec.official_parts), set(parts)
    if wanted != given:
        raise CheckpointError(
            f"{arch!r} needs checkpoint part(s) {sorted(wanted)}, got {sorted(given)}"
        )
    paths = {k: Path(v) for k, v in parts.items()}

    if arch == "dctnet":
        model = create_model(arch)
        _load_dctnet(model, paths[""])
    elif arch == "dcgan":
        model = create_model(arch)
        for part in ("netg", "netd"):
            sub = getattr(model, part)
            sd = _fill_num_batches_tracked(sub, _torch_file(paths[part]))
            load_state_dict_strict(sub, sd, source=f"{part} ({paths[part].name})")
    elif arch == "googlenet":
        sd = _torch_file(paths[""])
        fc = sd.get("fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
        # Fine-tuned torchvision files may have been saved with aux_logits=False.
        has_aux = any(k.startswith(("aux1.", "aux2.")) for k in sd)
        model = create_model(arch, num_classes=num_classes, aux_logits=has_aux)
        load_state_dict_strict(model, sd, source=paths[""].name)
    else:
        model = create_model(arch)
        load_state_dict_strict(model, _torch_file(paths[""]), source=paths[""].name)
    return model.eval()
