"""Starter models: on the first start with an empty store, each task's default model is
trained on a small procedurally generated dataset, as ordinary jobs visible in /jobs.

The data is synthetic (shapes and cartoon faces drawn by worker/training/synthetic.py) and
every dataset and version made from it says so (``synthetic: true`` in the dataset meta,
``lineage.synthetic_data`` in the manifest). Set ``TOONFORGE_STARTER_MODELS=false`` to skip.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jobs.errors import IdempotencyConflict
from jobs.queue import create_and_enqueue
from jobs.spec import FinetuneRequest
from model_store.dataset_scan import scan_dataset
from model_store.dataset_schema import DatasetMeta
from model_store.datasets import DATA_DIR, DatasetStore, tree_bytes
from model_store.errors import DatasetExists, DatasetInvalid
from model_store.store import ModelStore
from model_store.tasks import Task
from service.config import Settings
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

# arch to train from scratch, synthetic dataset sizes, hyper-parameters: small enough that
# all five finish within minutes on two CPU cores, large enough to learn something visible.
STARTERS: dict[Task, tuple[str, dict[str, int], dict[str, Any]]] = {
    Task.CARTOONIZE: ("dctnet", {"n": 32}, {"epochs": 4, "image_size": 64, "batch_size": 4}),
    Task.MATTE: ("u2netp", {"n": 32}, {"epochs": 4, "resize": 96, "crop": 80,
                                       "batch_size": 4}),
    Task.CLASSIFY: ("googlenet", {"per_class": 16},
                    {"epochs": 4, "image_size": 64, "batch_size": 8}),
    Task.GENERATE: ("dcgan", {"n": 64}, {"epochs": 5, "batch_size": 16}),
    Task.AUTOENCODE: ("ae", {"n": 64}, {"epochs": 8, "batch_size": 16}),
}


def publish_synthetic_dataset(store_root: Path, task: Task | str, dataset_id: str,
                              seed: int = 0, **sizes: int) -> Path:
    """Draw ``task``'s synthetic dataset and publish it as ``dataset_id``; returns data/."""
    from worker.training.synthetic import make_dataset

    task = Task(task)
    datasets = DatasetStore(store_root)
    with datasets.staging() as staged:
        make_dataset(task.value, staged / DATA_DIR, seed=seed, **sizes)
        report, index = scan_dataset(staged / DATA_DIR, task, 40_000_000)
        if not report.can_train:
            raise DatasetInvalid(report)
        meta = DatasetMeta(id=dataset_id, task=task, name=f"synthetic {task.value} (starter)",
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
    if not settings.starter_models or ModelStore(runtime.store_root).list_models():
        return []
    job_ids = []
    for task, (arch, sizes, hyperparameters) in STARTERS.items():
        dataset_id = f"starter-{task.value}"
        try:
            publish_synthetic_dataset(runtime.store_root, task, dataset_id, **sizes)
        except DatasetExists:
            pass
        request = FinetuneRequest(task=task, dataset_id=dataset_id, base=arch,
                                  target_model=settings.default_models[task],
                                  hyperparameters=hyperparameters, auto_activate=True)
        try:
            job, created = create_and_enqueue(runtime.repo, request, f"starter-{task.value}",
                                              queue=runtime.queue,
                                              store_root=runtime.store_root)
        except IdempotencyConflict:
            continue  # an older release queued a different starter: leave it
        if created:
            log.info("queued starter job %s: %s from scratch on synthetic data", job.id,
                     request.target_model)
        job_ids.append(job.id)
    return job_ids
