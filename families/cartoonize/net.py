"""DCT-Net texture-translation generator (White-box cartoonization ``unet_generator``,
32 channels, 4 residual blocks, 1,467,075 parameters) followed by the guided filter.

The original is TensorFlow (slim); this is a numerically faithful PyTorch port:

- slim convs have biases and no activation; LeakyReLU(0.2) is applied after each, except
  inside the residual add and after the last conv.
- TF "SAME" padding: stride-1 odd kernels pad ``k // 2`` on every side (same as PyTorch),
  stride-2 3x3 convs on even sizes pad bottom/right only, so they get an explicit
  ``(0, 1, 0, 1)`` pad. Serving sizes are multiples of 4 so every stride-2 input is even.
- ``tf.image.resize_bilinear`` (TF1 defaults: no corner alignment, no half-pixel centres)
  samples source ``dst * 0.5`` for an exact 2x upscale; ``functional.interpolate`` uses half-pixel
  centres, which differs, so :func:`tf_resize_bilinear_2x` writes it with plain tensor ops
  that also export to ONNX with dynamic H, W.
- The guided filter (r=1, eps=1e-2) uses the input photo as guide; its box filter is the
  zero-padded 3x3 mean normalised by the in-image pixel count.

``DCTNet.forward(x)`` takes BGR in [-1, 1] and returns the filtered cartoon clipped to
[-1, 1]; ``DCTNet.generator`` is the raw generator for training.

Official checkpoint (part ``""``): the authors' frozen TensorFlow graph (``.pb``, e.g.
ModelScope's ``cartoon_anime_bg.pb``), read without TensorFlow by ``worker/nets/tf_graph.py``
and checked node by node against this generator; or a ``.npz`` holding the TF variables of
``unet_generator`` under their TF names (``generator/Conv/weights`` ...), HWIO weights.
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
from torch.nn import functional

from worker.nets import tf_graph
from worker.nets.checkpoints import (
    CheckpointMismatch,
    CheckpointUnreadable,
    Shape,
    compare_state_dict,
    load_state_dict_strict,
)
from worker.nets.registry import ExportGraph, ImportedWeights, register_arch


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return functional.leaky_relu(x, 0.2)


def tf_resize_bilinear_2x(x: torch.Tensor) -> torch.Tensor:
    """Exact 2x upscale of NCHW ``x`` as TF1 ``resize_bilinear`` computes it.

    out[2k] = in[k]; out[2k+1] = (in[k] + in[k+1]) / 2; the last odd row/column repeats
    in[last] because TF clamps the neighbour index at the border.
    """
    # Rows.
    nxt = torch.cat((x[:, :, 1:], x[:, :, -1:]), dim=2)
    x = torch.stack((x, (x + nxt) * 0.5), dim=3).flatten(2, 3)
    # Columns.
    nxt = torch.cat((x[:, :, :, 1:], x[:, :, :, -1:]), dim=3)
    return torch.stack((x, (x + nxt) * 0.5), dim=4).flatten(3, 4)


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window, counting only in-image pixels (TF box / box(ones))."""
    return functional.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_filter(x: torch.Tensor, y: torch.Tensor, r: int = 1, eps: float = 1e-2) -> torch.Tensor:
    """White-box cartoonization's guided filter: ``x`` is the guide, ``y`` the filtered input."""
    mean_x = box_mean(x, r)
    mean_y = box_mean(y, r)
    cov_xy = box_mean(x * y, r) - mean_x * mean_y
    var_x = box_mean(x * x, r) - mean_x * mean_x
    a = cov_xy / (var_x + eps)
    b = mean_y - a * mean_x
    return box_mean(a, r) * x + box_mean(b, r)


class _Conv(nn.Conv2d):
    """A slim conv: bias, TF "SAME" padding (bottom/right for stride 2), no activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> None:
        pad = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=pad)
        self.tf_stride2 = stride == 2
        if stride == 2 and kernel_size != 3:
            raise ValueError("only 3x3 stride-2 convs are used by this generator")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_stride2:
            x = functional.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = _Conv(ch, ch, 3)
        self.conv2 = _Conv(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No activation after the add: matches the TF resblock.
        residual: torch.Tensor = self.conv2(_lrelu(self.conv1(x)))
        return x + residual


class UNetGenerator(nn.Module):
    """``unet_generator``; ``conv0`` is TF ``Conv``, ``convK`` is ``Conv_K``, ``blocks.i`` is
    ``block_i`` (see :func:`tf_to_torch_name`)."""

    def __init__(self, channel: int = 32, num_blocks: int = 4) -> None:
        super().__init__()
        c = channel
        self.conv0 = _Conv(3, c, 7)
        self.conv1 = _Conv(c, c, 3, stride=2)
        self.conv2 = _Conv(c, c * 2, 3)
        self.conv3 = _Conv(c * 2, c * 2, 3, stride=2)
        self.conv4 = _Conv(c * 2, c * 4, 3)
        self.blocks = nn.Sequential(*(ResBlock(c * 4) for _ in range(num_blocks)))
        self.conv5 = _Conv(c * 4, c * 2, 3)
        self.conv6 = _Conv(c * 2, c * 2, 3)
        self.conv7 = _Conv(c * 2, c, 3)
        self.conv8 = _Conv(c, c, 3)
        self.conv9 = _Conv(c, 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.conv1(x0))
        x1 = _lrelu(self.conv2(x1))
        x2 = _lrelu(self.conv3(x1))
        x2 = _lrelu(self.conv4(x2))
        x2 = self.blocks(x2)
        x2 = _lrelu(self.conv5(x2))
        x3 = tf_resize_bilinear_2x(x2)
        x3 = _lrelu(self.conv6(x3 + x1))
        x3 = _lrelu(self.conv7(x3))
        x4 = tf_resize_bilinear_2x(x3)
        x4 = _lrelu(self.conv8(x4 + x0))
        out: torch.Tensor = self.conv9(x4)
        return out


class DCTNet(nn.Module):
    def __init__(
        self, channel: int = 32, num_blocks: int = 4, r: int = 1, eps: float = 1e-2
    ) -> None:
        super().__init__()
        self.generator = UNetGenerator(channel, num_blocks)
        self.r = r
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = guided_filter(x, self.generator(x), self.r, self.eps)
        return out.clamp(-1.0, 1.0)


def _images(gen: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=gen) * 2.0 - 1.0


def _export_graphs(model: nn.Module) -> dict[str, ExportGraph]:
    gen = torch.Generator().manual_seed(4567)
    axes = {0: "batch", 2: "height", 3: "width"}
    return {
        "main": ExportGraph(
            module=model,
            input_names=("image",),
            output_names=("cartoon",),
            example_inputs=(_images(gen, 2, 64, 64),),
            dynamic_axes={"image": dict(axes), "cartoon": dict(axes)},
            parity_inputs=[
                (_images(gen, 1, 64, 64),),
                (_images(gen, 2, 96, 128),),
                (_images(gen, 1, 120, 84),),
            ],
        )
    }


# -- the official checkpoint: TensorFlow variables -------------------------------------------

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


def _conv_specs(model: nn.Module) -> list[tf_graph.ConvSpec]:
    """The generator's convs as the frozen graph must hold them (TF scope, HWIO, stride)."""
    specs = []
    for name, module in model.named_modules():
        if isinstance(module, _Conv):
            scope = torch_to_tf_name(f"{name}.weight").rsplit("/", 1)[0]
            o, i, h, w = module.weight.shape
            specs.append(tf_graph.ConvSpec(scope, (h, w, i, o), int(module.stride[0])))
    return specs


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k.split(":")[0]: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointUnreadable(path, f"{type(exc).__name__}: {exc}"[:300]) from exc


def load_tf_variables(model: nn.Module, path: Path) -> nn.Module:
    """Load the TF variables of ``unet_generator`` into ``model`` strictly: from a frozen
    graph (``.pb``: its Const nodes, after the structure check) or a ``.npz`` (HWIO)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointUnreadable(path, "no such file")
    if zipfile.is_zipfile(path):
        tf_vars = _read_npz(path)
    else:  # anything else must be a frozen graph (GraphDef)
        try:
            tf_vars = tf_graph.read_slim_convs(path, _conv_specs(model), root="generator",
                                               resizes=2)
        except CheckpointUnreadable as exc:
            raise CheckpointUnreadable(path, f"{exc.reason}; DCT-Net weights come as a frozen"
                                       " graph (.pb) or a .npz of its TF variables") from exc

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


def _load_official(parts: Mapping[str, Path], labels_file: Path | None) -> ImportedWeights:
    return ImportedWeights(load_tf_variables(dctnet(), parts[""]))


def _serving_config(model: nn.Module, hp: Any = None) -> dict[str, Any]:
    # Sizes follow the photo (dynamic H and W), not the training crop: ``hp`` changes nothing.
    # Long side capped at 720 and sides a multiple of 4 (two stride-2 convs); BGR in [-1, 1].
    return {"max_side": 720, "multiple_of": 4, "color_order": "BGR",
            "input_range": [-1, 1], "output_range": [-1, 1]}


@register_arch(
    "dctnet",
    task="cartoonize",
    serving_config=_serving_config,
    export_graphs=_export_graphs,
    official_parts={"": "dctnet_generator.tf_vars.txt"},
    load_official=_load_official,
    description="DCT-Net unet_generator (32 ch, 4 res blocks) + guided filter (r=1, eps=1e-2)",
)
def dctnet(channel: int = 32, num_blocks: int = 4) -> DCTNet:
    return DCTNet(channel, num_blocks)
