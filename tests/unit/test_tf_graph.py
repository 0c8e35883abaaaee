"""DCT-Net's frozen TensorFlow graphs (``.pb``) import without TensorFlow: a GraphDef built
with the protobuf message types from a test-made generator's variables loads into exactly the
state dict the ``.npz`` path gives, and a graph whose structure differs is refused with the
offending node named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.checkpoints import make_official_checkpoint
from tests.support.tf_graphs import (
    build_frozen_generator,
    node,
    npz_variables,
    write_frozen_generator,
)
from worker.nets import tf_graph
from worker.nets.checkpoints import CheckpointUnreadable, load_official
from worker.nets.tf_graph import (
    DT_FLOAT,
    DT_HALF,
    GraphDef,
    GraphStructureMismatch,
    TensorProto,
)


@pytest.fixture(scope="module")
def tf_vars(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return npz_variables(make_official_checkpoint("dctnet", tmp_path_factory.mktemp("ckpt"))[""])


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_official_checkpoint("dctnet", tmp_path_factory.mktemp("ckpt"))[""]


def test_pb_and_npz_load_identical_weights(npz_file: Path, tmp_path: Path) -> None:
    pb = write_frozen_generator(npz_variables(npz_file), tmp_path / "cartoon_anime_bg.pb")
    from_npz = load_official("dctnet", {"": npz_file}).module
    from_pb = load_official("dctnet", {"": pb}).module
    a, b = from_npz.state_dict(), from_pb.state_dict()
    assert a.keys() == b.keys() and len(a) == 36
    assert all(torch.equal(a[k], b[k]) for k in a)
    # HWIO in the graph -> OIHW in the module, value for value.
    w = npz_variables(npz_file)["generator/Conv_9/weights"]
    np.testing.assert_array_equal(b["generator.conv9.weight"].numpy(), w.transpose(3, 2, 0, 1))
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(from_npz(x), from_pb(x))


def test_the_message_types_round_trip(tf_vars: dict[str, np.ndarray]) -> None:
    graph = build_frozen_generator(tf_vars)
    parsed = GraphDef()
    parsed.ParseFromString(graph.SerializeToString())
    weights = node(parsed, "generator/Conv/weights")
    assert weights.op == "Const" and weights.attr["dtype"].type == DT_FLOAT
    np.testing.assert_array_equal(tf_graph.tensor_to_array(weights.attr["value"].tensor),
                                  tf_vars["generator/Conv/weights"])
    assert list(node(parsed, "generator/Conv_1/Conv2D").attr["strides"].list.i) == [1, 2, 2, 1]
    # TensorFlow's short forms: float_val, and one value broadcast to the shape.
    t = TensorProto(dtype=DT_FLOAT)
    t.tensor_shape.dim.add(size=2)
    t.tensor_shape.dim.add(size=3)
    t.float_val.append(0.5)
    assert tf_graph.tensor_to_array(t).tolist() == [[0.5] * 3] * 2
    t.float_val.extend([1, 2, 3, 4, 5])
    assert tf_graph.tensor_to_array(t).ravel().tolist() == [0.5, 1, 2, 3, 4, 5]


def _rename(graph: Any) -> str:
    n = node(graph, "generator/Conv_4/weights")
    n.name = "generator/Conv_4/kernel"
    node(graph, "generator/Conv_4/weights/read").input[0] = "generator/Conv_4/kernel"
    return "missing Const node 'generator/Conv_4/weights'"


def _drop(graph: Any) -> str:
    graph.node.remove(node(graph, "generator/block_1/conv2/biases"))
    return "missing Const node 'generator/block_1/conv2/biases'"


def _wrong_shape(graph: Any) -> str:
    t = node(graph, "generator/Conv_2/weights").attr["value"].tensor
    t.tensor_shape.dim[3].size = 65
    t.tensor_content = np.zeros((3, 3, 32, 65), "<f4").tobytes()
    return "node 'generator/Conv_2/weights': shape 3x3x32x65, expected 3x3x32x64"


def _op_on_path(graph: Any) -> str:
    conv = node(graph, "generator/Conv_7/Conv2D")
    scaled = graph.node.add(name="generator/Conv_7/weights/scaled", op="Mul")
    scaled.input.extend(["generator/Conv_7/weights/read", "generator/mul/y"])
    conv.input[1] = scaled.name
    return "unexpected op Mul (node 'generator/Conv_7/weights/scaled')"


def _stride(graph: Any) -> str:
    node(graph, "generator/Conv_3/Conv2D").attr["strides"].list.i[:] = [1, 1, 1, 1]
    return "node 'generator/Conv_3/Conv2D': strides [1, 1, 1, 1], expected [1, 2, 2, 1]"


def _padding(graph: Any) -> str:
    node(graph, "generator/Conv/Conv2D").attr["padding"].s = b"VALID"
    return "node 'generator/Conv/Conv2D': padding b'VALID'"


def _not_frozen(graph: Any) -> str:
    node(graph, "generator/Conv_5/biases").op = "VariableV2"
    return "node 'generator/Conv_5/biases' is a VariableV2: the graph is not frozen"


def _half(graph: Any) -> str:
    node(graph, "generator/Conv_8/biases").attr["value"].tensor.dtype = DT_HALF
    return "node 'generator/Conv_8/biases': dtype DT_HALF, expected DT_FLOAT"


def _extra_conv(graph: Any) -> str:
    extra = graph.node.add(name="generator/Conv_10/weights", op="Const")
    extra.attr["value"].tensor.CopyFrom(node(graph, "generator/Conv_8/weights").attr["value"]
                                        .tensor)
    return "unexpected Const node 'generator/Conv_10/weights'"


def _resize(graph: Any) -> str:
    node(graph, "generator/ResizeBilinear_1").attr["half_pixel_centers"].b = True
    return "node 'generator/ResizeBilinear_1': ResizeBilinear with align_corners or" \
           " half_pixel_centers"


def _bias_elsewhere(graph: Any) -> str:
    node(graph, "generator/Conv_6/BiasAdd").input[0] = "generator/Conv_5/Conv2D"
    return "node 'generator/Conv_6/BiasAdd' (BiasAdd) adds to Conv2D node" \
           " 'generator/Conv_5/Conv2D', not to 'generator/Conv_6'"


DAMAGE: dict[str, Callable[[Any], str]] = {
    "renamed": _rename, "missing": _drop, "wrong_shape": _wrong_shape,
    "op_on_path": _op_on_path, "stride": _stride, "padding": _padding,
    "not_frozen": _not_frozen, "dtype": _half, "extra_conv": _extra_conv, "resize": _resize,
    "bias_on_other_conv": _bias_elsewhere,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_graph_that_differs_is_refused_naming_the_node(
    damage: str, tf_vars: dict[str, np.ndarray], tmp_path: Path
) -> None:
    graph = build_frozen_generator(tf_vars)
    expected = DAMAGE[damage](graph)
    pb = write_frozen_generator(tf_vars, tmp_path / "damaged.pb", graph)
    with pytest.raises(GraphStructureMismatch) as info:
        load_official("dctnet", {"": pb})
    assert expected in str(info.value)
    assert "damaged.pb" in str(info.value)


def test_a_file_that_is_no_graph_is_unreadable(tmp_path: Path) -> None:
    junk = tmp_path / "cartoon.pb"
    junk.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(CheckpointUnreadable, match=r"cartoon\.pb.*GraphDef.*\.npz"):
        load_official("dctnet", {"": junk})
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointUnreadable, match="no nodes"):
        load_official("dctnet", {"": empty})
