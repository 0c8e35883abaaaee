"""service/views.py: routes answer wire models (core/wire, or a family's own), never the
store's models, and mapping a stored object onto its wire model keeps today's JSON."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel

from core import wire
from model_store.dataset_schema import (
    DatasetMeta,
    IngestResult,
    IntakeReport,
    SizeStats,
)
from model_store.manifest import (
    FileEntry,
    GraphSpec,
    Lineage,
    Manifest,
    OutputParity,
    ParityReport,
    TensorSpec,
    VariantRecord,
)
from service.app import create_app
from service.views import dataset_view, ingest_view, manifest_view
from tasks import task_specs
from tasks.layouts import SkippedFile

_AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
# Where a response model may come from: the generic contract, the error envelope, or a
# family's own folder (its endpoints' answers).
_WIRE = ("core.wire.", "service.errors", "families.")


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += _api_routes(route.original_router.routes)
    return found


def _models(annotation: Any, seen: set[type[BaseModel]]) -> None:
    """Every pydantic model an annotation reaches (fields, lists, unions, nested models)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for field in annotation.model_fields.values():
                _models(field.annotation, seen)
        return
    for argument in typing.get_args(annotation):
        _models(argument, seen)


def test_every_route_answers_wire_models() -> None:
    routes = _api_routes(create_app().routes)
    seen: set[type[BaseModel]] = set()
    for route in routes:
        _models(route.response_model, seen)
        for answer in (route.responses or {}).values():
            if isinstance(answer, dict):
                _models(answer.get("model"), seen)
    stray = sorted(f"{m.__module__}.{m.__qualname__}" for m in seen
                   if not m.__module__.startswith(_WIRE))
    assert not stray, f"routes answer models outside the wire contract: {stray}"
    assert {wire.Manifest, wire.IngestResult, wire.DatasetMeta, wire.JobView} <= seen


def _manifest(task: str) -> Manifest:
    """A stored manifest with every optional part filled in."""
    tensor = TensorSpec(name="image", shape=["batch", 3, 64, 64], dtype="float32")
    return Manifest(
        model="m", version=3, task=task, arch="net", created_at=_AT.isoformat(),
        description="d", graphs={"main": GraphSpec(file="model.onnx", inputs=[tensor],
                                                   outputs=[tensor], opset=17)},
        preprocessing={"size": 64, "mean": [0.5, 0.5, 0.5]}, labels=["a", "b"],
        parity=ParityReport(
            passed=True, tolerance=1e-4, rule="relative", rtol=1e-3,
            max_abs_error={"main.image": 1e-6},
            outputs={"main.image": OutputParity(max_abs_error=1e-6, scale=2.0, atol=1e-4,
                                                rtol=1e-3, bound=2.1e-3, passed=True)},
            inputs="seeded", torch_version="2", onnxruntime_version="1", detail="ok"),
        metrics={"loss": 0.1, "per_class": {"a": 0.5}},
        lineage=Lineage(source="finetune", checkpoint={"w.pt": "ab"}, dataset="ds",
                        parent="m@2", hyperparameters={"epochs": 2}, job_id="j",
                        synthetic_data=True),
        extra={"k": [1, 2]}, files={"model.onnx": FileEntry(sha256="ab", bytes=10)},
        variants={"int8": VariantRecord(
            precision="int8", passed=False, reason="r", graphs={"main": "model.int8.onnx"},
            fidelity={"main.psnr": 40.0}, limits={"psnr": ">= 40"}, speedup=1.5,
            fp32_ms=2.0, int8_ms=1.3, calibration="c", calibration_inputs=8,
            held_out_inputs=4, method="qdq", onnxruntime_version="1", seconds=3.0)})


def _ingest(task: str) -> IngestResult:
    meta = DatasetMeta(id="ds", task=task, name="n", created_at=_AT, bytes=10,
                       filename="ds.zip", synthetic=True, counts={"train": 4}, owner="k1")
    report = IntakeReport(
        task=task, can_train=False, problems=["p"], warnings=["w"], split_source="given",
        counts={"train": 4, "val": 1}, class_counts={"a": {"train": 2}},
        image_size=SizeStats(min_width=1, max_width=2, mean_width=1.5, min_height=1,
                             max_height=2, mean_height=1.5),
        files_seen=7, files_accepted=5, skipped=[SkippedFile(path="x.txt", reason="no")],
        files_skipped=1, files_ignored=1, ignored=["y"], truncated=True,
        stripped_folder="top")
    return IngestResult(meta=meta, report=report)


def test_the_views_keep_the_stored_json() -> None:
    task = task_specs()[0].name
    manifest, ingest = _manifest(task), _ingest(task)
    for view, stored, wire_model in ((manifest_view(manifest), manifest, wire.Manifest),
                                     (ingest_view(ingest), ingest, wire.IngestResult),
                                     (dataset_view(ingest.meta), ingest.meta,
                                      wire.DatasetMeta)):
        assert type(view) is wire_model
        assert view.model_dump(mode="json") == stored.model_dump(mode="json")
    # Nested parts are wire models too, not the stored objects passed through.
    view = manifest_view(manifest)
    assert type(view.variants["int8"]) is wire.VariantRecord
    assert type(view.parity.outputs["main.image"]) is wire.OutputParity
    assert type(ingest_view(ingest).report.skipped[0]) is wire.SkippedFile


def test_a_field_the_store_adds_stays_off_the_wire() -> None:
    class LaterManifest(Manifest):
        storage_only: str = "private"

    task = task_specs()[0].name
    stored = LaterManifest(**_manifest(task).model_dump())
    shown = manifest_view(stored).model_dump(mode="json")
    assert "storage_only" not in shown
    assert shown == _manifest(task).model_dump(mode="json")
