"""Frozen TensorFlow graphs of DCT-Net's generator, built with the protobuf message types
(no TensorFlow): what ``tf.graph_util.convert_variables_to_constants`` writes for the
ModelScope export (``input_image`` HxWx3 in 0..255, ``/127.5 - 1``, ``unet_generator`` under
``generator/``, ``output_image`` uint8). Each variable is a ``Const`` read through an
``Identity`` (``.../read``) by its ``Conv2D`` / ``BiasAdd``, as in a frozen slim graph.

The guided filter and the clip/scale after the generator are reduced to one node each: the
importer reads the generator's constants and checks the generator's structure only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.nets.tf_graph import DT_FLOAT, GraphDef

DT_UINT8 = 4


class _Builder:
    def __init__(self, tf_vars: dict[str, np.ndarray]) -> None:
        self.graph = GraphDef()
        self.graph.versions.producer = 27
        self.tf_vars = tf_vars
        self.counts: dict[str, int] = {}

    def unique(self, name: str) -> str:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def node(self, name: str, op: str, inputs: list[str], **attrs: Any) -> str:
        node = self.graph.node.add(name=name, op=op)
        node.input.extend(inputs)
        for key, value in attrs.items():
            attr = node.attr[key]
            if isinstance(value, bool):
                attr.b = value
            elif isinstance(value, bytes):
                attr.s = value
            elif isinstance(value, float):
                attr.f = value
            elif isinstance(value, int):
                attr.type = value
            elif isinstance(value, list):
                attr.list.i.extend(value)
            elif isinstance(value, np.ndarray):
                attr.tensor.dtype = DT_FLOAT
                for d in value.shape:
                    attr.tensor.tensor_shape.dim.add(size=int(d))
                attr.tensor.tensor_content = np.ascontiguousarray(value, "<f4").tobytes()
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        return self.node(name, "Const", [], dtype=DT_FLOAT, value=np.asarray(value, np.float32))

    def variable(self, name: str) -> str:
        self.const(name, self.tf_vars[name])
        return self.node(f"{name}/read", "Identity", [name], T=DT_FLOAT)

    def conv(self, x: str, scope: str, stride: int) -> str:
        w = self.variable(f"generator/{scope}/weights")
        y = self.node(f"generator/{scope}/Conv2D", "Conv2D", [x, w], T=DT_FLOAT,
                      strides=[1, stride, stride, 1], padding=b"SAME", data_format=b"NHWC",
                      dilations=[1, 1, 1, 1], use_cudnn_on_gpu=True)
        b = self.variable(f"generator/{scope}/biases")
        return self.node(f"generator/{scope}/BiasAdd", "BiasAdd", [y, b], T=DT_FLOAT,
                         data_format=b"NHWC")

    def lrelu(self, x: str, scope: str = "generator") -> str:
        return self.node(self.unique(f"{scope}/LeakyRelu"), "LeakyRelu", [x], T=DT_FLOAT,
                         alpha=0.2)

    def add(self, a: str, b: str, scope: str = "generator") -> str:
        return self.node(self.unique(f"{scope}/add"), "AddV2", [a, b], T=DT_FLOAT)

    def resize(self, x: str) -> str:
        size = self.node(self.unique("generator/mul"), "Mul",
                         [self.node(self.unique("generator/strided_slice"), "StridedSlice",
                                    [self.node(self.unique("generator/Shape"), "Shape", [x])]),
                          self.const(self.unique("generator/mul/y"), np.float32(2.0))])
        return self.node(self.unique("generator/ResizeBilinear"), "ResizeBilinear", [x, size],
                         T=DT_FLOAT, align_corners=False, half_pixel_centers=False)


def build_frozen_generator(tf_vars: dict[str, np.ndarray], *, num_blocks: int = 4) -> Any:
    """The ``GraphDef`` of a frozen DCT-Net export holding ``tf_vars`` (TF name -> HWIO)."""
    b = _Builder(tf_vars)
    x = b.node("input_image", "Placeholder", [], dtype=DT_FLOAT)
    x = b.node("ExpandDims", "ExpandDims", [x, b.const("ExpandDims/dim", np.float32(0))])
    x = b.node("truediv", "RealDiv", [x, b.const("truediv/y", np.float32(127.5))], T=DT_FLOAT)
    x = b.node("sub", "Sub", [x, b.const("sub/y", np.float32(1.0))], T=DT_FLOAT)
    photo = x
    x0 = b.lrelu(b.conv(photo, "Conv", 1))
    x1 = b.lrelu(b.conv(x0, "Conv_1", 2))
    x1 = b.lrelu(b.conv(x1, "Conv_2", 1))
    x2 = b.lrelu(b.conv(x1, "Conv_3", 2))
    x2 = b.lrelu(b.conv(x2, "Conv_4", 1))
    for i in range(num_blocks):
        scope = f"generator/block_{i}"
        r = b.conv(x2, f"block_{i}/conv1", 1)
        r = b.lrelu(r, scope)
        r = b.conv(r, f"block_{i}/conv2", 1)
        x2 = b.add(r, x2, scope)
    x2 = b.lrelu(b.conv(x2, "Conv_5", 1))
    x3 = b.resize(x2)
    x3 = b.lrelu(b.conv(b.add(x3, x1), "Conv_6", 1))
    x3 = b.lrelu(b.conv(x3, "Conv_7", 1))
    x4 = b.resize(x3)
    x4 = b.lrelu(b.conv(b.add(x4, x0), "Conv_8", 1))
    out = b.conv(x4, "Conv_9", 1)
    # guided_filter(photo, out, r=1) and the clip / (x + 1) * 127.5, reduced to one node each
    filtered = b.node("add_1", "AddV2", [out, photo], T=DT_FLOAT)
    b.node("output_image", "Cast", [filtered], SrcT=DT_FLOAT, DstT=DT_UINT8)
    return b.graph


def write_frozen_generator(tf_vars: dict[str, np.ndarray], path: Path,
                           graph: Any | None = None) -> Path:
    """Write ``build_frozen_generator(tf_vars)`` (or ``graph``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((graph if graph is not None else build_frozen_generator(tf_vars))
                     .SerializeToString())
    return path


def npz_variables(npz_path: Path) -> dict[str, np.ndarray]:
    """The TF variables of a ``make_official_checkpoint("dctnet", ...)`` ``.npz``."""
    with np.load(npz_path) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def node(graph: Any, name: str) -> Any:
    """The node called ``name`` in ``graph`` (to damage it in a test)."""
    return next(n for n in graph.node if n.name == name)


__all__ = ["build_frozen_generator", "node", "npz_variables",
           "write_frozen_generator"]
