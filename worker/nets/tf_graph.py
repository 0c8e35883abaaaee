"""Read the weights out of a frozen TensorFlow graph (``GraphDef`` ``.pb``) without TensorFlow.

DCT-Net's authors publish their generators only as frozen graphs (ModelScope
``damo/cv_unet_person-image-cartoon_compound-models``: ``cartoon_anime_bg.pb``, ...). Freezing
(``tf.graph_util.convert_variables_to_constants``) turns every variable into a ``Const`` node
of the same name (``generator/Conv/weights``) and keeps the ``.../read`` ``Identity`` between
it and the op that uses it. So the variables of a slim ``unet_generator`` can be read back as
the Const tensors of the graph, once the graph is proven to use them the way the PyTorch port
does.

TensorFlow's ``.proto`` files do not come on PyPI without TensorFlow, so this module declares
the few messages it needs (``GraphDef``, ``NodeDef``, ``AttrValue``, ``TensorProto``,
``TensorShapeProto``, ``VersionDef``) with TensorFlow's own field numbers, in a private
descriptor pool (no clash with a TensorFlow or TensorBoard loaded in the same process).
Fields not declared (function libraries, debug info) are kept as unknown fields by protobuf.

:func:`read_slim_convs` checks the structure and names the node on every refusal: a missing
or non-constant weight, a wrong dtype or shape, an unexpected op between a weight and its
conv, a conv whose stride/padding/layout differs, an extra conv or weight in the scope, a
resize with other corner/centre rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from worker.nets.checkpoints import CheckpointError, CheckpointUnreadable

# tensorflow/core/framework/types.proto (the values used here).
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_HALF = 19
_DTYPE_NAMES = {0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8",
                7: "DT_STRING", 9: "DT_INT64", 10: "DT_BOOL", 14: "DT_BFLOAT16", 19: "DT_HALF"}

_F = descriptor_pb2.FieldDescriptorProto
_SHOWN = 10


def _field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int,
           *, repeated: bool = False, type_name: str = "", oneof: int | None = None) -> None:
    f = msg.field.add(name=name, number=number, type=kind,
                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """tensor_shape.proto, tensor.proto, attr_value.proto, node_def.proto, versions.proto and
    graph.proto, reduced to the fields a frozen graph's weights live in (same numbers)."""
    fd = descriptor_pb2.FileDescriptorProto(name="toonforge/tf_graph_subset.proto",
                                            package="tensorflow", syntax="proto3")
    shape = fd.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    _field(dim, "size", 1, _F.TYPE_INT64)
    _field(dim, "name", 2, _F.TYPE_STRING)
    _field(shape, "dim", 2, _F.TYPE_MESSAGE, repeated=True,
           type_name=".tensorflow.TensorShapeProto.Dim")
    _field(shape, "unknown_rank", 3, _F.TYPE_BOOL)

    tensor = fd.message_type.add(name="TensorProto")
    _field(tensor, "dtype", 1, _F.TYPE_INT32)  # enum DataType: same varint on the wire
    _field(tensor, "tensor_shape", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto")
    _field(tensor, "version_number", 3, _F.TYPE_INT32)
    _field(tensor, "tensor_content", 4, _F.TYPE_BYTES)
    _field(tensor, "float_val", 5, _F.TYPE_FLOAT, repeated=True)
    _field(tensor, "double_val", 6, _F.TYPE_DOUBLE, repeated=True)
    _field(tensor, "int_val", 7, _F.TYPE_INT32, repeated=True)
    _field(tensor, "string_val", 8, _F.TYPE_BYTES, repeated=True)
    _field(tensor, "int64_val", 10, _F.TYPE_INT64, repeated=True)
    _field(tensor, "bool_val", 11, _F.TYPE_BOOL, repeated=True)
    _field(tensor, "half_val", 13, _F.TYPE_INT32, repeated=True)

    attr = fd.message_type.add(name="AttrValue")
    lst = attr.nested_type.add(name="ListValue")
    _field(lst, "s", 2, _F.TYPE_BYTES, repeated=True)
    _field(lst, "i", 3, _F.TYPE_INT64, repeated=True)
    _field(lst, "f", 4, _F.TYPE_FLOAT, repeated=True)
    _field(lst, "b", 5, _F.TYPE_BOOL, repeated=True)
    _field(lst, "type", 6, _F.TYPE_INT32, repeated=True)
    _field(lst, "shape", 7, _F.TYPE_MESSAGE, repeated=True,
           type_name=".tensorflow.TensorShapeProto")
    _field(lst, "tensor", 8, _F.TYPE_MESSAGE, repeated=True, type_name=".tensorflow.TensorProto")
    attr.oneof_decl.add(name="value")
    _field(attr, "list", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.AttrValue.ListValue", oneof=0)
    _field(attr, "s", 2, _F.TYPE_BYTES, oneof=0)
    _field(attr, "i", 3, _F.TYPE_INT64, oneof=0)
    _field(attr, "f", 4, _F.TYPE_FLOAT, oneof=0)
    _field(attr, "b", 5, _F.TYPE_BOOL, oneof=0)
    _field(attr, "type", 6, _F.TYPE_INT32, oneof=0)
    _field(attr, "shape", 7, _F.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto", oneof=0)
    _field(attr, "tensor", 8, _F.TYPE_MESSAGE, type_name=".tensorflow.TensorProto", oneof=0)
    _field(attr, "placeholder", 9, _F.TYPE_STRING, oneof=0)

    node = fd.message_type.add(name="NodeDef")
    entry = node.nested_type.add(name="AttrEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.AttrValue")
    _field(node, "name", 1, _F.TYPE_STRING)
    _field(node, "op", 2, _F.TYPE_STRING)
    _field(node, "input", 3, _F.TYPE_STRING, repeated=True)
    _field(node, "device", 4, _F.TYPE_STRING)
    _field(node, "attr", 5, _F.TYPE_MESSAGE, repeated=True,
           type_name=".tensorflow.NodeDef.AttrEntry")

    versions = fd.message_type.add(name="VersionDef")
    _field(versions, "producer", 1, _F.TYPE_INT32)
    _field(versions, "min_consumer", 2, _F.TYPE_INT32)
    _field(versions, "bad_consumers", 3, _F.TYPE_INT32, repeated=True)

    graph = fd.message_type.add(name="GraphDef")
    _field(graph, "node", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".tensorflow.NodeDef")
    _field(graph, "version", 3, _F.TYPE_INT32)
    _field(graph, "versions", 4, _F.TYPE_MESSAGE, type_name=".tensorflow.VersionDef")
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


# The message classes (build graphs with them in tests; parse files with read_graph_def).
GraphDef: Any = _message_class("GraphDef")
NodeDef: Any = _message_class("NodeDef")
AttrValue: Any = _message_class("AttrValue")
TensorProto: Any = _message_class("TensorProto")
TensorShapeProto: Any = _message_class("TensorShapeProto")


class GraphStructureMismatch(CheckpointError):
    """The frozen graph is not the architecture: each problem names its node."""

    def __init__(self, problems: Sequence[str], *, source: str = "") -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:_SHOWN])
        more = f" (and {len(self.problems) - _SHOWN} more)" if len(self.problems) > _SHOWN else ""
        where = f" {source}" if source else ""
        super().__init__(f"frozen graph{where} does not match the architecture: {shown}{more}")


def read_graph_def(path: Path) -> Any:
    """Parse a binary ``GraphDef``; ``CheckpointUnreadable`` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointUnreadable(path, "no such file")
    graph = GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise CheckpointUnreadable(path, f"not a frozen TensorFlow graph (GraphDef): {exc}"
                                   [:300]) from exc
    if not len(graph.node):
        raise CheckpointUnreadable(path, "not a frozen TensorFlow graph (GraphDef): no nodes")
    return graph


def tensor_to_array(tensor: Message, *, node: str = "") -> np.ndarray:
    """A float32 ``TensorProto`` as a numpy array (raw ``tensor_content`` or ``float_val``,
    one value broadcast to the shape as TensorFlow does)."""
    t: Any = tensor
    where = f"node {node!r}: " if node else ""
    if t.dtype != DT_FLOAT:
        raise ValueError(f"{where}dtype {_DTYPE_NAMES.get(t.dtype, t.dtype)}, expected DT_FLOAT")
    shape = tuple(int(d.size) for d in t.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ValueError(f"{where}constant of unknown shape {shape}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if t.tensor_content:
        if len(t.tensor_content) != 4 * count:
            raise ValueError(f"{where}{len(t.tensor_content)} bytes of data for shape"
                             f" {_fmt(shape)} ({4 * count} expected)")
        values = np.frombuffer(t.tensor_content, dtype="<f4")
    elif len(t.float_val) == count:
        values = np.asarray(t.float_val, dtype=np.float32)
    elif len(t.float_val) == 1:
        values = np.full(count, t.float_val[0], dtype=np.float32)
    elif count == 0:
        values = np.zeros(0, dtype=np.float32)
    else:
        raise ValueError(f"{where}{len(t.float_val)} values for shape {_fmt(shape)}")
    return values.astype(np.float32).reshape(shape)


def _fmt(shape: Iterable[int]) -> str:
    dims = list(shape)
    return "x".join(map(str, dims)) if dims else "scalar"


def _base(ref: str) -> str:
    """Node name of an input reference (``name:1`` -> ``name``); control inputs excluded."""
    return ref.split(":", 1)[0]


@dataclass(frozen=True)
class ConvSpec:
    """One slim conv of the expected network: variables ``<scope>/weights`` (HWIO) and
    ``<scope>/biases``, used by a ``Conv2D`` (NHWC, "SAME", ``stride``) and a ``BiasAdd``."""

    scope: str
    kernel: tuple[int, int, int, int]
    stride: int = 1


class _Graph:
    def __init__(self, graph: Any) -> None:
        self.nodes: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            self.nodes[node.name] = node
        for node in graph.node:
            for ref in node.input:
                if not ref.startswith("^"):
                    self.consumers.setdefault(_base(ref), []).append(node)

    def users(self, name: str) -> list[Any]:
        """The nodes that read ``name``, looking through ``Identity`` chains (``/read``)."""
        out, todo, seen = [], [name], set()
        while todo:
            current = todo.pop()
            for user in self.consumers.get(current, []):
                if user.op == "Identity" and user.name not in seen:
                    seen.add(user.name)
                    todo.append(user.name)
                else:
                    out.append((current, user))
        return out


def _attr_ints(node: Any, key: str) -> list[int] | None:
    if key not in node.attr:
        return None
    return [int(v) for v in node.attr[key].list.i]


def _attr_bytes(node: Any, key: str) -> bytes | None:
    return bytes(node.attr[key].s) if key in node.attr else None


def _attr_bool(node: Any, key: str) -> bool:
    return bool(node.attr[key].b) if key in node.attr else False


def _find_prefix(g: _Graph, first: ConvSpec, root: str) -> str:
    """The name prefix the graph puts before ``root`` (empty for DCT-Net's released graphs;
    an outer name scope when a graph was frozen inside one)."""
    wanted = f"{first.scope}/weights"
    if wanted in g.nodes:
        return ""
    hits = [n for n in g.nodes if n.endswith("/" + wanted)]
    return hits[0][: -len(wanted)] if len(hits) == 1 else ""


_STATEFUL = {"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp"}
_CONV_OPS = {"Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MatMul"}


def read_slim_convs(
    path: Path, convs: Sequence[ConvSpec], *, root: str, resizes: int | None = None,
) -> dict[str, np.ndarray]:
    """The ``<scope>/weights`` and ``<scope>/biases`` arrays of ``convs`` from the frozen graph
    at ``path``, keyed by those TF variable names, after checking that the graph under
    ``root`` (e.g. ``generator``) is exactly these convs: every problem found is reported at
    once (:class:`GraphStructureMismatch`), each naming its node. ``resizes``: how many
    ``ResizeBilinear`` ops (TF1 defaults: no corner alignment, no half-pixel centres) the
    scope must hold, None to not check."""
    path = Path(path)
    g = _Graph(read_graph_def(path))
    problems: list[str] = []
    if not convs:
        raise ValueError("no convs to read")
    prefix = _find_prefix(g, convs[0], root)
    scope_root = f"{prefix}{root}/"

    for node in g.nodes.values():
        if node.op in _STATEFUL:
            problems.append(f"node {node.name!r} is a {node.op}: the graph is not frozen"
                            " (variables must be constants)")

    arrays: dict[str, np.ndarray] = {}
    expected_consts: set[str] = set()
    expected_ops: set[str] = set()
    for conv in convs:
        for leaf, user_op, shape in (("weights", "Conv2D", conv.kernel),
                                     ("biases", "BiasAdd", (conv.kernel[3],))):
            var = f"{conv.scope}/{leaf}"
            name = prefix + var
            expected_consts.add(name)
            node = g.nodes.get(name)
            if node is None:
                problems.append(f"missing Const node {name!r}")
                continue
            if node.op != "Const":
                problems.append(f"node {name!r} is a {node.op}, expected Const")
                continue
            try:
                array = tensor_to_array(node.attr["value"].tensor, node=name)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if array.shape != tuple(shape):
                problems.append(f"node {name!r}: shape {_fmt(array.shape)}, expected"
                                f" {_fmt(shape)}")
                continue
            arrays[var] = array
            users = g.users(name)
            if not users:
                problems.append(f"Const node {name!r} is not used by any {user_op}")
            for via, user in users:
                if user.op != user_op:
                    problems.append(f"unexpected op {user.op} (node {user.name!r}) between"
                                    f" {name!r} and its {user_op}")
                elif len(user.input) < 2 or _base(user.input[1]) != via:
                    problems.append(f"node {user.name!r} ({user_op}) takes {name!r} in the"
                                    " wrong place")
                else:
                    expected_ops.add(user.name)
                    problems += _check_user(g, user, conv, prefix)

    for name, node in g.nodes.items():
        if not name.startswith(scope_root):
            continue
        if node.op == "Const" and name.endswith(("/weights", "/biases")) \
                and name not in expected_consts:
            problems.append(f"unexpected Const node {name!r} (no such variable in the"
                            " architecture)")
        elif node.op in _CONV_OPS and name not in expected_ops:
            problems.append(f"unexpected op {node.op} (node {name!r}) in {root!r}")
    if resizes is not None:
        found = [n for n in g.nodes.values()
                 if n.name.startswith(scope_root) and n.op.startswith("Resize")]
        if len(found) != resizes:
            problems.append(f"{len(found)} resize op(s) under {root!r}"
                            f" ({', '.join(repr(n.name) for n in found) or 'none'}),"
                            f" expected {resizes}")
        for n in found:
            if n.op != "ResizeBilinear":
                problems.append(f"node {n.name!r} is a {n.op}, expected ResizeBilinear")
            elif _attr_bool(n, "align_corners") or _attr_bool(n, "half_pixel_centers"):
                problems.append(f"node {n.name!r}: ResizeBilinear with align_corners or"
                                " half_pixel_centers set (the port computes TF1's defaults)")
    if problems:
        raise GraphStructureMismatch(problems, source=repr(path.name))
    return arrays


def _check_user(g: _Graph, user: Any, conv: ConvSpec, prefix: str) -> list[str]:
    """The attributes of a conv's ``Conv2D``, and that its ``BiasAdd`` adds to that conv."""
    problems = []
    if user.op == "Conv2D":
        strides = _attr_ints(user, "strides")
        if strides != [1, conv.stride, conv.stride, 1]:
            problems.append(f"node {user.name!r}: strides {strides}, expected"
                            f" [1, {conv.stride}, {conv.stride}, 1]")
        padding = _attr_bytes(user, "padding")
        if padding != b"SAME":
            problems.append(f"node {user.name!r}: padding {padding!r}, expected b'SAME'")
        layout = _attr_bytes(user, "data_format")
        if layout not in (None, b"NHWC"):
            problems.append(f"node {user.name!r}: data_format {layout!r}, expected b'NHWC'")
        dilations = _attr_ints(user, "dilations")
        if dilations not in (None, [], [1, 1, 1, 1]):
            problems.append(f"node {user.name!r}: dilations {dilations}, expected [1, 1, 1, 1]")
    else:  # BiasAdd: its data input must be this conv's Conv2D
        source = g.nodes.get(_base(user.input[0]))
        convs = [u for _, u in g.users(f"{prefix}{conv.scope}/weights") if u.op == "Conv2D"]
        if source is None or source.name not in {c.name for c in convs}:
            got = source.op if source is not None else "nothing"
            problems.append(f"node {user.name!r} (BiasAdd) adds to {got} node"
                            f" {_base(user.input[0])!r}, not to {conv.scope!r}'s Conv2D")
        layout = _attr_bytes(user, "data_format")
        if layout not in (None, b"NHWC"):
            problems.append(f"node {user.name!r}: data_format {layout!r}, expected b'NHWC'")
    return problems

