"""What the store holds, as the /models routes show it (blocking reads: run off the loop)."""

from __future__ import annotations

from core.settings import Settings
from core.wire import ModelDetail, ModelInfo, VersionSummary
from model_store.errors import ActivationRefused, ManifestCorrupt
from model_store.store import ModelStore, ModelSummary
from tasks import default_model


def _info(summary: ModelSummary, settings: Settings) -> ModelInfo:
    return ModelInfo(
        name=summary.name,
        task=summary.task,
        versions=summary.versions,
        active=summary.active,
        is_default=default_model(summary.task, settings.default_models) == summary.name,
    )


def list_models(store: ModelStore, settings: Settings) -> list[ModelInfo]:
    return [_info(summary, settings) for summary in store.list_models()]


def model_detail(
    store: ModelStore, settings: Settings, name: str, loaded_version: int | None
) -> ModelDetail:
    summary = store.summary(name)
    versions = []
    corrupt = []
    for number in summary.versions:
        try:
            manifest = store.manifest(name, number)
        except ManifestCorrupt:
            corrupt.append(number)  # listed as such; the model's other versions still are
            continue
        versions.append(VersionSummary(
            version=number,
            arch=manifest.arch,
            created_at=manifest.created_at,
            description=manifest.description,
            parity_passed=manifest.parity.passed,
            source=manifest.lineage.source,
            parent=manifest.lineage.parent,
            metrics=manifest.metrics,
        ))
    try:
        rollback_target: int | None = store.rollback_target(name)
    except ActivationRefused:
        rollback_target = None  # no earlier active version: a rollback would answer 409
    return ModelDetail(
        **_info(summary, settings).model_dump(),
        loaded_version=loaded_version,
        version_summaries=versions,
        corrupt_versions=corrupt,
        rollback_target=rollback_target,
    )
