"""Starter models: on the first start with an empty store, each task's default model is
trained on a small procedurally generated dataset, as ordinary jobs visible in /jobs.

What each task trains (architecture, dataset sizes, hyper-parameters) is its spec's
``starter`` recipe (its family's spec); a task without one gets no starter. The data is
made, not uploaded, by the spec's ``synthetic`` maker with the recipe's sizes (shapes and
cartoon faces drawn from tasks/synthetic.py's pieces; cartoonize's: crops of the real photos
the worker ships and their cartoons by a classical toon filter), and every dataset and
version made from it says so (``synthetic: true`` in the dataset meta,
``lineage.synthetic_data`` in the manifest). Set ``TOONFORGE_STARTER_MODELS=false`` to skip.
``bench/starters.py`` times the starters on an empty store.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.settings import Settings, get_settings
from core.wire import FinetuneRequest
from jobs.errors import IdempotencyConflict
from jobs.queue import create_and_enqueue
from model_store.dataset_scan import scan_dataset
from model_store.dataset_schema import DatasetMeta
from model_store.datasets import DATA_DIR, DatasetStore, tree_bytes
from model_store.errors import DatasetExists, DatasetInvalid
from tasks import default_model, get_task, task_specs
from tasks.synthetic import make_dataset
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def publish_synthetic_dataset(datasets: DatasetStore, task: str, dataset_id: str,
                              seed: int = 0, *, max_pixels: int | None = None, **sizes: int
                              ) -> Path:
    """Draw ``task``'s synthetic dataset and publish it as ``dataset_id`` in ``datasets``;
    returns its data/ directory (local: fetched into the cache with an S3 store).
    ``max_pixels`` is the decompression-bomb guard of the scan (default: the settings')."""
    spec = get_task(task)
    task = spec.name
    if max_pixels is None:
        max_pixels = get_settings().max_pixels
    with datasets.staging() as staged:
        make_dataset(task, staged / DATA_DIR, seed=seed, **sizes)
        report, index = scan_dataset(staged / DATA_DIR, spec, max_pixels)
        if not report.can_train:
            raise DatasetInvalid(report)
        meta = DatasetMeta(id=dataset_id, task=task, name=f"synthetic {task} (starter)",
                           bytes=tree_bytes(staged / DATA_DIR), filename="synthetic",
                           synthetic=True, counts=report.counts)
        datasets.publish(staged, meta, report, index)
    return datasets.data_dir(dataset_id)


def queue_starter_jobs(runtime: WorkerRuntime) -> list[str]:
    """Queue one starter job per task when the store has no model at all; returns job ids.

    Several workers may start at once: dataset ids and idempotency keys are fixed, so each
    starter dataset and job exists once whoever gets there first.
    """
    settings: Settings = runtime.settings
    if not settings.starter_models:
        return []
    stores = runtime.stores
    if stores.models.list_models():
        return []
    job_ids = []
    for spec in task_specs():
        if spec.starter is None:
            continue
        recipe, dataset_id = spec.starter, f"starter-{spec.name}"
        try:
            publish_synthetic_dataset(stores.datasets, spec.name, dataset_id,
                                      max_pixels=settings.max_pixels, **recipe.dataset)
        except DatasetExists:
            pass
        request = FinetuneRequest(task=spec.name, dataset_id=dataset_id, base=recipe.arch,
                                  target_model=default_model(spec.name, settings.default_models),
                                  hyperparameters=dict(recipe.hyperparameters),
                                  auto_activate=True)
        try:
            job, created = create_and_enqueue(runtime.repo, request, f"starter-{spec.name}",
                                              queue=runtime.queue,
                                              stores=stores)
        except IdempotencyConflict:
            continue  # an older release queued a different starter: leave it
        if created:
            log.info("queued starter job %s: %s from scratch on synthetic data", job.id,
                     request.target_model)
        job_ids.append(job.id)
    return job_ids
