"""BatchNorm statistics that belong to the weights they are validated with.

Before every validation pass the training loop (base.py) re-estimates the running
statistics of the trainable BatchNorm layers over the training set, so the eval-mode module
that is validated, kept in best.pt, evaluated by the gate and exported is one and the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def trainable_batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` that track statistics and are not frozen.

    A layer whose affine parameters do not train belongs to a frozen stage, and it keeps
    the base's statistics: freezing is always a prefix of the network (classify's first
    ``freeze_layers`` stages, cartoonize's first encoder convs), so a frozen layer's inputs
    are computed by frozen layers only and do not change during the fine-tune; its
    statistics still describe them (and re-estimating them on a small fine-tune set would
    only add noise to what the base measured on its own, larger, data)."""
    layers: list[nn.modules.batchnorm._BatchNorm] = []
    for m in module.modules():
        if not isinstance(m, _BATCHNORM) or not m.track_running_stats:
            continue
        params = [p for p in (m.weight, m.bias) if p is not None]
        if params and not any(p.requires_grad for p in params):
            continue  # frozen
        layers.append(m)
    return layers


def recalibrate_batchnorm(module: nn.Module, batches: Iterable[Any],
                          forward: Callable[[nn.Module, Any], Any]) -> int:
    """Re-estimate the running statistics of ``module``'s trainable BatchNorm layers.

    Each layer is reset and set to a cumulative average (momentum None), ``forward(module,
    batch)`` runs every batch with only those layers in train mode (dropout and frozen
    layers stay in eval mode, and no random number is drawn: resume stays exact), then
    everything goes back to eval mode with the layers' momentum restored. Without this the
    eval-mode statistics of a short fine-tune are still mostly those of the initialisation
    (momentum 0.1 over a few dozen steps), and every input gets about the same output.
    Returns the number of batches seen."""
    layers = trainable_batchnorms(module)
    module.eval()
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward(module, batch)
                seen += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        module.eval()
    return seen


def first_input(module: nn.Module, batch: Any) -> Any:
    return module(batch[0] if isinstance(batch, list | tuple) else batch)
