"""A toy sixth family, declared from tests/ only: a task spec with an image pipeline and a
tiny ONNX graph honouring it. Nothing in service/ names it; ``POST /infer/sketch`` serves it.

``SPEC`` is not registered on import: a test registers it (and unregisters it after), and a
server subprocess imports tests/api/toy_plugin.py (TOONFORGE_TASK_PLUGINS), which does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from pydantic import Field

from model_store.files import MAIN_GRAPH
from model_store.manifest import GraphSpec, Lineage, Manifest, ParityReport, TensorSpec
from model_store.store import ModelStore
from tasks import CommonHyperparameters, GraphIO, ImagePipeline, ServingConfig, TaskSpec
from tasks.layouts import ImageFolderLayout

TASK = "sketch"
MODEL = "sketchy"
SIDE = 16


class SketchServing(ServingConfig):
    size: int = Field(ge=1)
    input_range: tuple[float, float]


class SketchHyperparameters(CommonHyperparameters):
    epochs: int = Field(default=1, ge=1, le=10)
    batch_size: int = Field(default=2, ge=1, le=64)


def prepare(image: Image.Image, config: SketchServing) -> dict[str, np.ndarray]:
    low, high = config.input_range
    pixels = np.asarray(image.resize((config.size, config.size)), np.float32)
    scaled = low + (high - low) * pixels / 255.0
    return {"image": np.ascontiguousarray(scaled.transpose(2, 0, 1)[None])}


def finish(outputs: dict[str, np.ndarray], image: Image.Image,
           config: SketchServing) -> Image.Image:
    low, high = config.input_range
    values = (outputs["sketch"][0].mean(axis=0) - low) / (high - low)
    gray = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").resize(image.size)


SPEC = TaskSpec(
    name=TASK,
    description="image in, inverted grey sketch out (a test family)",
    default_model=MODEL,
    graphs={"main": GraphIO(MAIN_GRAPH, ("image",), ("sketch",))},
    serving=SketchServing,
    hyperparameters=SketchHyperparameters,
    layout=ImageFolderLayout(),
    gate=None,
    image_pipeline=ImagePipeline(prepare=prepare, finish=finish),
)

PREPROCESSING: dict[str, Any] = {"size": SIDE, "input_range": [0, 1]}


def _graph(path: Path, offset: float) -> GraphSpec:
    # sketch = offset - image: with offset 1 and inputs in [0, 1], the negative.
    shape = ["N", 3, SIDE, SIDE]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["offset", "image"], ["sketch"])], "sketch",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("sketch", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.float32(offset), "offset")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return GraphSpec(file=path.name, opset=18,
                     inputs=[TensorSpec(name="image", shape=shape)],
                     outputs=[TensorSpec(name="sketch", shape=shape)])


def publish_sketch(store: ModelStore, *, offset: float = 1.0, activate: bool = True,
                   preprocessing: dict[str, Any] | None = None) -> int:
    """Publish one version of the toy model (the task must be registered); its number."""
    with store.staging(MODEL) as staged:
        manifest = Manifest(
            model=MODEL, version=0, task=TASK, arch="toy-sketch",
            graphs={"main": _graph(staged / MAIN_GRAPH, offset)},
            preprocessing=PREPROCESSING if preprocessing is None else preprocessing,
            parity=ParityReport(passed=True, tolerance=1e-5), lineage=Lineage(source="scratch"),
        )
        final = store.publish(MODEL, staged, manifest)
    if activate:
        store.activate(MODEL, final.version)
    return final.version
