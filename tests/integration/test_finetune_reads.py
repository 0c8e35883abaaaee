"""A fine-tune job resolves once: one real job, run in this process from its row to a
published and gated version, reads its dataset's index.json exactly once (training, the
INT8 calibration and the activation gate share that reading)."""

from __future__ import annotations

import builtins
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.wire import FinetuneRequest
from jobs.states import JobStatus
from model_store.datasets import INDEX_FILE, DatasetStore
from tests.integration.conftest import JobBackend
from worker.runner import run_job
from worker.runtime import WorkerRuntime
from worker.starter import publish_synthetic_dataset

pytestmark = pytest.mark.timeout(300)


def _counting(real: Callable[..., Any], reads: list[str]) -> Callable[..., Any]:
    """``open`` as it is, noting every opening of a file named index.json."""
    def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | Path) and Path(file).name == INDEX_FILE:
            reads.append(str(file))
        return real(file, *args, **kwargs)

    return opener


def test_one_job_reads_its_dataset_index_once(embedded_backend: JobBackend,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The INT8 variant calibrates on the dataset's validation images: one more reader.
    monkeypatch.setenv("TOONFORGE_INT8_VARIANTS", "1")
    settings = embedded_backend.settings()
    publish_synthetic_dataset(DatasetStore(embedded_backend.store_dir), "autoencode", "faces",
                              n=12)
    runtime = WorkerRuntime.create(settings, worker_id="reads:1")
    request = FinetuneRequest(task="autoencode", dataset_id="faces", base="ae",
                              target_model="faces-ae", auto_activate=True,
                              hyperparameters={"epochs": 2, "batch_size": 4, "latent_dim": 32,
                                               "num_workers": 0})
    job, _ = runtime.repo.create(request)

    reads: list[str] = []
    # pathlib's read_bytes / read_text / open go through io.open; open() is builtins.open.
    monkeypatch.setattr(io, "open", _counting(io.open, reads))
    monkeypatch.setattr(builtins, "open", _counting(builtins.open, reads))
    status = run_job(job.id, runtime)
    monkeypatch.undo()

    done = runtime.repo.get(job.id)
    assert status is JobStatus.SUCCEEDED, done.error
    # The job went through every step that uses the dataset: it trained, calibrated an INT8
    # variant on the dataset's images and was put to the gate.
    manifest = runtime.stores.models.manifest("faces-ae", 1)
    assert "int8" in manifest.variants
    assert "fine-tune's dataset" in (manifest.variants["int8"].calibration or "")
    assert done.activation_reason
    assert len(reads) == 1, reads
    runtime.db.dispose()
