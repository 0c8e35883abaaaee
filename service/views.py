"""Storage models -> the wire models routes answer (the one place that knows both shapes).

The store's models (model_store/manifest.py, model_store/dataset_schema.py) are its file
formats; the HTTP contract is core/wire. Each view reads the wire model's fields off the
stored object, so a field the store adds stays private until the contract names it, and a
field it renames or drops fails here (tests/unit/test_views.py) instead of changing the API.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from core import wire
from model_store.dataset_schema import DatasetMeta, IngestResult
from model_store.manifest import Manifest

_Wire = TypeVar("_Wire", bound=BaseModel)


def _view(wire_model: type[_Wire], stored: BaseModel) -> _Wire:
    return wire_model.model_validate(stored, from_attributes=True)


def manifest_view(manifest: Manifest) -> wire.Manifest:
    return _view(wire.Manifest, manifest)


def dataset_view(meta: DatasetMeta) -> wire.DatasetMeta:
    return _view(wire.DatasetMeta, meta)


def ingest_view(result: IngestResult) -> wire.IngestResult:
    return _view(wire.IngestResult, result)
