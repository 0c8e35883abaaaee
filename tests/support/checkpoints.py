"""Fake official checkpoint files, written from the key/shape lists in tests/fixtures/compat.

The files are built from the published layouts, not from our modules, so loading them
strictly proves that our architectures match the official ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

COMPAT = Path(__file__).resolve().parents[1] / "fixtures" / "compat"

# arch -> {part: (key-list fixture, file name)}
OFFICIAL_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "u2net": {"": ("u2net.keys.txt", "u2net.pth")},
    "u2netp": {"": ("u2netp.keys.txt", "u2netp.pth")},
    "googlenet": {"": ("googlenet.keys.txt", "googlenet-1378be20.pth")},
    "dcgan": {
        "netg": ("dcgan_netg.keys.txt", "netg_200.pth"),
        "netd": ("dcgan_netd.keys.txt", "netd_200.pth"),
    },
    "dctnet": {"": ("dctnet_generator.tf_vars.txt", "dctnet_generator.npz")},
}

CORRUPTIONS = ("missing_key", "extra_key", "bad_shape", "truncated")


def read_layout(fixture: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in (COMPAT / fixture).read_text().splitlines():
        if not line.strip():
            continue
        name, shape = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        out.append((name, dims))
    return out


def _value(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    # Values that keep forward passes numerically sane: small weights, BN near identity.
    leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_var":
        return torch.rand(shape, generator=gen) + 0.5
    if leaf in ("running_mean", "bias", "biases"):
        return torch.randn(shape, generator=gen) * 0.01
    if len(shape) == 1:  # BN weight
        return 1.0 + torch.randn(shape, generator=gen) * 0.05
    return torch.randn(shape, generator=gen) * 0.05


def _pick(names: list[str]) -> str:
    # A weight tensor from the middle of the list: "the offending key" for the error tests.
    weights = [n for n in names if n.endswith(("weight", "weights"))]
    return weights[len(weights) // 2]


def make_official_checkpoint(
    arch: str,
    dest: Path,
    *,
    seed: int = 0,
    corrupt: str | None = None,
    drop_num_batches_tracked: bool = True,
) -> dict[str, Path]:
    """Write ``arch``'s official checkpoint file(s) under ``dest``; return {part: path}.

    ``corrupt`` ("missing_key", "extra_key", "bad_shape", "truncated") damages the first part.
    For dcgan, ``netd`` is written without ``num_batches_tracked`` like pre-0.4.1 files
    unless ``drop_num_batches_tracked`` is False.
    """
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corrupt!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Path] = {}
    for i, (part, (fixture, filename)) in enumerate(OFFICIAL_FILES[arch].items()):
        layout = read_layout(fixture)
        tensors = {name: _value(name, shape, gen) for name, shape in layout}
        if arch == "dcgan" and part == "netd" and drop_num_batches_tracked:
            tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
        damage = corrupt if i == 0 else None
        if damage == "missing_key":
            del tensors[_pick(list(tensors))]
        elif damage == "extra_key":
            sep = "/" if arch == "dctnet" else "."
            tensors[f"bogus{sep}extra{sep}weight"] = torch.zeros(3)
        elif damage == "bad_shape":
            key = _pick(list(tensors))
            shape = list(tensors[key].shape)
            shape[0] += 1
            tensors[key] = torch.zeros(shape)
        path = dest / filename
        if arch == "dctnet":
            np.savez(path, **{k: v.numpy().astype(np.float32) for k, v in tensors.items()})
        else:
            torch.save(tensors, path)
        if damage == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        out[part] = path
    return out


def offending_key(arch: str, corrupt: str) -> str:
    """The tensor name that ``make_official_checkpoint(arch, corrupt=...)`` damaged."""
    fixture = next(iter(OFFICIAL_FILES[arch].values()))[0]
    names = [n for n, _ in read_layout(fixture)]
    if corrupt == "extra_key":
        return "bogus/extra/weight" if arch == "dctnet" else "bogus.extra.weight"
    return _pick(names)
