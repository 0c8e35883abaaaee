"""How close an INT8 variant's outputs stay to the fp32 graph's: the metrics an
``Int8Gate`` bounds (tasks/registry.py) and the verdict against its bounds.

Kept apart from the quantization itself (worker/training/quantize.py) so that the gate's
arithmetic can be read and tested on known arrays alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks import Int8Gate


class UnknownMetric(ValueError):
    """An INT8 gate names a metric this module does not compute."""


def _per_image_minmax(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1).astype(np.float64)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (flat - low) / span, 0.0)


def _unit(values: np.ndarray, output_range: Sequence[float]) -> np.ndarray:
    low, high = float(output_range[0]), float(output_range[1])
    return np.clip((values.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits.reshape(len(logits), -1), axis=1, kind="stable")[:, :k]


def fidelity(metric: str, ref: np.ndarray, got: np.ndarray, config: Mapping[str, Any]) -> float:
    """One metric of ``got`` (INT8) against ``ref`` (fp32), over a stack of outputs."""
    output_range = config.get("output_range", (0.0, 1.0))
    if metric == "mask_mae":
        return float(np.mean(np.abs(_per_image_minmax(ref) - _per_image_minmax(got))))
    if metric == "mask_iou":
        a, b = _per_image_minmax(ref) >= 0.5, _per_image_minmax(got) >= 0.5
        union = np.logical_or(a, b).sum(axis=1)
        inter = np.logical_and(a, b).sum(axis=1)
        return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))
    if metric == "top1_agreement":
        return float(np.mean(_top_k(ref, 1)[:, 0] == _top_k(got, 1)[:, 0]))
    if metric == "top5_overlap":
        k = min(5, ref.reshape(len(ref), -1).shape[1])
        a, b = _top_k(ref, k), _top_k(got, k)
        return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))
    if metric == "pixel_mae":
        return float(np.mean(np.abs(_unit(ref, output_range) - _unit(got, output_range))))
    if metric == "psnr_db":
        mse = float(np.mean((_unit(ref, output_range) - _unit(got, output_range)) ** 2))
        return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    raise UnknownMetric(f"unknown INT8 gate metric {metric!r}")


_PER_IMAGE = frozenset({"mask_mae", "mask_iou", "top1_agreement", "top5_overlap"})


def fidelity_over(metric: str, refs: Sequence[np.ndarray], gots: Sequence[np.ndarray],
                  config: Mapping[str, Any]) -> float:
    """``fidelity`` over per-input outputs that may differ in size (cartoonize's graph
    takes any size): per-image metrics are averaged over the inputs, pixel metrics are
    taken over all their pixels together."""
    if len({r.shape for r in refs}) == 1:
        return fidelity(metric, np.concatenate(refs), np.concatenate(gots), config)
    if metric in _PER_IMAGE:
        return float(np.mean([fidelity(metric, r, g, config)
                              for r, g in zip(refs, gots, strict=True)]))
    flat = [np.concatenate([a.reshape(1, -1) for a in arrays], axis=1)
            for arrays in (refs, gots)]
    return fidelity(metric, flat[0], flat[1], config)


Compared = Mapping[str, tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]


def judge(gate: Int8Gate, outputs: Compared, config: Mapping[str, Any]
          ) -> tuple[dict[str, float], list[str]]:
    """Figures per ``role.metric`` of ``outputs`` (role -> (fp32, INT8) outputs), and the
    bounds of ``gate`` that were missed (empty: the variant passes)."""
    figures: dict[str, float] = {}
    missed: list[str] = []
    for role, (ref, got) in outputs.items():
        for metric, bound in gate.at_most.items():
            value = fidelity_over(metric, ref, got, config)
            figures[f"{role}.{metric}"] = value
            if not value <= bound:
                missed.append(f"{role} {metric} {value:.4g} > {bound:.4g}")
        for metric, bound in gate.at_least.items():
            value = fidelity_over(metric, ref, got, config)
            figures[f"{role}.{metric}"] = value
            if not value >= bound:
                missed.append(f"{role} {metric} {value:.4g} < {bound:.4g}")
    return figures, missed


def limits(gate: Int8Gate) -> dict[str, str]:
    """``metric -> '<= 0.0039'`` for the manifest."""
    return {**{m: f"<= {v:.6g}" for m, v in gate.at_most.items()},
            **{m: f">= {v:.6g}" for m, v in gate.at_least.items()}}
