"""Job-test helpers: a synthetic dataset published into a store, and job requests."""

from __future__ import annotations

from pathlib import Path

from model_store.dataset_scan import scan_dataset
from model_store.dataset_schema import DatasetMeta
from model_store.datasets import DATA_DIR, DatasetStore, tree_bytes
from model_store.tasks import Task


def publish_synthetic_dataset(store_root: Path, task: Task | str, dataset_id: str,
                              **sizes: int) -> Path:
    """Draw ``task``'s synthetic dataset and publish it as ``dataset_id``; returns data/."""
    from worker.training.synthetic import make_dataset

    task = Task(task)
    datasets = DatasetStore(store_root)
    with datasets.staging() as staged:
        make_dataset(task.value, staged / DATA_DIR, **sizes)
        report, index = scan_dataset(staged / DATA_DIR, task, 40_000_000)
        assert report.can_train, report.problems
        meta = DatasetMeta(id=dataset_id, task=task, name=dataset_id,
                           bytes=tree_bytes(staged / DATA_DIR), filename="synthetic",
                           synthetic=True, counts=report.counts)
        datasets.publish(staged, meta, report, index)
    return datasets.data_dir(dataset_id)
