"""Convolutional autoencoder for 64x64 RGB faces in [0, 1] (``ae``).

Design (about 1.9M parameters at latent_dim=64):

- encoder: four ``Conv2d(k=4, s=2, p=1) -> BatchNorm -> LeakyReLU(0.2)`` stages,
  3 -> 32 -> 64 -> 128 -> 256 channels, 64 -> 32 -> 16 -> 8 -> 4 pixels; flatten (4096) and
  a ``Linear`` to the latent (no activation, so the latent distribution can be fitted with a
  Gaussian for sampling).
- decoder: ``Linear`` latent -> 256x4x4 with ReLU, then four
  ``ConvTranspose2d(k=4, s=2, p=1)`` up-stages 256 -> 128 -> 64 -> 32 -> 32 (BN + ReLU),
  a 3x3 conv to 3 channels and a Sigmoid so reconstructions live in [0, 1].

``encode(x)`` gives the latent, ``decode(z)`` the image, ``forward(x)`` both
``(latent, reconstruction)``.

It has no official release: its "official" file (part ``""``) is a toonforge ``weights.pt``
(``{"arch", "arch_kwargs", "state_dict", "latent_stats"}``), e.g. from another store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from families.autoencode.spec import LATENT_STATS
from worker.nets.checkpoints import CheckpointUnreadable, ImportRefused, load_state_dict_strict
from worker.nets.registry import ExportGraph, ImportedWeights, register_arch

SIZE = 64
LATENT_MIN, LATENT_MAX = 32, 128
_ENC_CH = (3, 32, 64, 128, 256)
_BOTTOM = SIZE // 2 ** (len(_ENC_CH) - 1)  # 4


class ConvAutoencoder(nn.Module):
    def __init__(self, latent_dim: int = 64) -> None:
        super().__init__()
        if not LATENT_MIN <= latent_dim <= LATENT_MAX:
            raise ValueError(
                f"latent_dim must be in [{LATENT_MIN}, {LATENT_MAX}], got {latent_dim}"
            )
        self.latent_dim = latent_dim
        self.image_size = SIZE
        enc: list[nn.Module] = []
        for cin, cout in zip(_ENC_CH[:-1], _ENC_CH[1:], strict=True):
            enc += [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.encoder = nn.Sequential(*enc)
        flat = _ENC_CH[-1] * _BOTTOM * _BOTTOM
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(inplace=True))
        dec_ch = (256, 128, 64, 32, 32)
        dec: list[nn.Module] = []
        for cin, cout in zip(dec_ch[:-1], dec_ch[1:], strict=True):
            dec += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        dec += [nn.Conv2d(dec_ch[-1], 3, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        latent: torch.Tensor = self.to_latent(torch.flatten(self.encoder(x), 1))
        return latent

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, _ENC_CH[-1], _BOTTOM, _BOTTOM)
        image: torch.Tensor = self.decoder(h)
        return image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)


class _Decoder(nn.Module):
    def __init__(self, ae: ConvAutoencoder) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(latent)


def _export_graphs(model: nn.Module) -> dict[str, ExportGraph]:
    assert isinstance(model, ConvAutoencoder)
    gen = torch.Generator().manual_seed(5678)

    def images(n: int) -> torch.Tensor:
        return torch.rand(n, 3, SIZE, SIZE, generator=gen)

    def latents(n: int) -> torch.Tensor:
        return torch.randn(n, model.latent_dim, generator=gen)

    return {
        "main": ExportGraph(
            module=model,
            input_names=("image",),
            output_names=("latent", "reconstruction"),
            example_inputs=(images(2),),
            dynamic_axes={
                "image": {0: "batch"},
                "latent": {0: "batch"},
                "reconstruction": {0: "batch"},
            },
            parity_inputs=[(images(1),), (images(3),)],
        ),
        "decoder": ExportGraph(
            module=_Decoder(model),
            input_names=("latent",),
            output_names=("image",),
            example_inputs=(latents(2),),
            dynamic_axes={"latent": {0: "batch"}, "image": {0: "batch"}},
            parity_inputs=[(latents(1),), (latents(3),)],
        ),
    }


def _load_official(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
    path = parts[""]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "unreadable"
        raise CheckpointUnreadable(path, f"not a readable PyTorch file: {exc}"[:300]) from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointUnreadable(path, "not a toonforge weights file (no state_dict)")
    kwargs = dict(payload.get("arch_kwargs") or {})
    module = load_state_dict_strict(ae(**kwargs), payload["state_dict"], source=path.name)
    stats = payload.get("latent_stats")
    if stats is not None:
        try:
            stats = {k: np.asarray(stats[k], np.float32) for k in ("mean", "cholesky")}
        except KeyError as exc:
            raise ImportRefused(f"latent_stats in {path.name} lacks {exc}") from exc
    return ImportedWeights(module, kwargs,
                           artifacts={LATENT_STATS: stats} if stats is not None else {})


def _serving_config(model: nn.Module, hp: Any = None) -> dict[str, Any]:
    # Fixed by the built net (64x64, its latent_dim): ``hp`` changes nothing.
    # The API builds latents of the built module's size (a fine-tune may change it).
    assert isinstance(model, ConvAutoencoder)
    return {"size": SIZE, "latent_dim": int(model.latent_dim),
            "input_range": [0, 1], "output_range": [0, 1]}


@register_arch(
    "ae",
    task="autoencode",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"": None},
    load_official=_load_official,
    description="convolutional autoencoder, 64x64 RGB in [0,1], latent 32..128 (default 64)",
)
def ae(latent_dim: int = 64) -> ConvAutoencoder:
    return ConvAutoencoder(latent_dim)
