"""Evaluation metrics (numbers for manifests and for comparing versions).

The measures come from torchmetrics; this module fixes the protocol around them (what is
averaged over what) so that the numbers stay those our manifests have always recorded
(tests/unit/test_metrics.py compares them with straight re-implementations).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multilabel_precision_recall_curve,
)
from torchmetrics.functional.image import peak_signal_noise_ratio


class Mean:
    """Running mean of per-sample values (weights batches by their size)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float | torch.Tensor, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (dB) of NCHW batches; identical images give +inf."""
    value = peak_signal_noise_ratio(x.float(), y.float(), data_range=data_range,
                                    reduction="none", dim=(1, 2, 3))
    assert isinstance(value, torch.Tensor)
    return value


def minmax_normalize(pred: torch.Tensor) -> torch.Tensor:
    """Per-image (x - min) / (max - min), as U-2-Net's test script and our API do."""
    flat = pred.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scale = (hi - lo).clamp_min(1e-8)
    return ((flat - lo[:, None]) / scale[:, None]).view_as(pred)


class SaliencyMetrics:
    """MAE and max F-beta (beta^2 = 0.3) over 256 thresholds, the usual SOD protocol:
    precision and recall per image per threshold (torchmetrics' precision-recall curve,
    each image a label of its own), averaged over images, F at each threshold, then the
    maximum."""

    def __init__(self, beta2: float = 0.3, thresholds: int = 256) -> None:
        self.beta2 = beta2
        self.thresholds = thresholds
        self.mae = Mean()
        self.precision = torch.zeros(thresholds, dtype=torch.float64)
        self.recall = torch.zeros(thresholds, dtype=torch.float64)
        self.n = 0

    def add(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """``pred`` and ``gt``: N1HW in [0, 1]; gt binarised at 0.5."""
        pred, gt = pred.float().cpu().flatten(1), (gt.float().cpu().flatten(1) > 0.5)
        self.mae.add((pred - gt.float()).abs().mean(1).mean(), len(pred))
        # Pixels are the samples and images the labels: one curve per image. The curve's
        # last point (precision 1, recall 0) is its closing convention, not a threshold.
        precision, recall, _ = multilabel_precision_recall_curve(
            pred.T.contiguous(), gt.T.long().contiguous(), num_labels=len(pred),
            thresholds=self.thresholds)
        assert isinstance(precision, torch.Tensor) and isinstance(recall, torch.Tensor)
        # 0/0 (nothing predicted above a threshold, or an image with no foreground) counts
        # as 0, as in the SOD evaluation code.
        self.precision += precision[:, :-1].double().nan_to_num(0.0).sum(0)
        self.recall += recall[:, :-1].double().nan_to_num(0.0).sum(0)
        self.n += len(pred)

    def compute(self) -> dict[str, float]:
        p, r = self.precision / max(self.n, 1), self.recall / max(self.n, 1)
        f = (1 + self.beta2) * p * r / (self.beta2 * p + r).clamp_min(1e-12)
        return {"mae": self.mae.value(), "max_fbeta": float(f.max())}


def confusion_matrix(true: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    """K x K counts, rows = true class, columns = predicted class."""
    return multiclass_confusion_matrix(pred.long(), true.long(), num_classes=k,
                                       validate_args=False)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> dict[str, float]:
    """top1, top5 (k = min(5, K)), mean per-class accuracy and one accuracy per class."""
    k = logits.shape[1]
    topk = logits.topk(min(5, k), dim=1).indices
    out = {
        "top1": float((topk[:, 0] == labels).float().mean()),
        "top5": float((topk == labels[:, None]).any(1).float().mean()),
    }
    cm = confusion_matrix(labels, topk[:, 0], k)
    per_class = cm.diag().double() / cm.sum(1).clamp_min(1).double()
    present = cm.sum(1) > 0
    out["mean_class_acc"] = float(per_class[present].mean()) if present.any() else math.nan
    for i, name in enumerate(class_names):
        out[f"class_acc/{name}"] = float(per_class[i]) if present[i] else math.nan
    return out


def mean_pairwise_l2(samples: torch.Tensor) -> float:
    """Mean L2 distance between distinct pairs of samples, per pixel-RMS (0 = all identical).

    A cheap diversity statistic for generated images: mode collapse drives it to zero.
    """
    flat = samples.float().flatten(1)
    n = len(flat)
    if n < 2:
        return 0.0
    d = torch.cdist(flat, flat)
    return float(d.sum() / (n * (n - 1)) / math.sqrt(flat.shape[1]))


def moment_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance between the per-channel mean and std of two NCHW image sets: a crude,
    feature-free stand-in for FID that a learning generator must reduce."""
    def stats(t: torch.Tensor) -> torch.Tensor:
        c = t.float().transpose(0, 1).flatten(1)
        return torch.cat([c.mean(1), c.std(1)])
    return float((stats(a) - stats(b)).norm())
