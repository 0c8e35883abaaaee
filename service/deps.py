"""Dependencies of the routes, as ``Annotated`` aliases (one place to change wiring)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from core.settings import Settings
from jobs.artifacts import JobArtifacts
from jobs.queue import JobQueue
from jobs.repository import JobRepository
from jobs.request_checks import Stores
from jobs.sweeps import SweepRepository
from model_store.datasets import DatasetStore
from service.inference.pool import InferencePool


def get_app_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_pool(request: Request) -> InferencePool:
    # async: FastAPI sends a plain ``def`` dependency through a thread pool, one thread hop
    # per inference request for an attribute read (docs/BENCHMARKS.md).
    return cast(InferencePool, request.app.state.pool)


def get_stores(request: Request) -> Stores:
    """The process's model and dataset stores (opened once at start, service/app.py)."""
    return cast(Stores, request.app.state.stores)


def get_datasets(request: Request) -> DatasetStore:
    return get_stores(request).datasets


def get_artifacts(request: Request) -> JobArtifacts:
    """Where job samples and checkpoints live (the store directory, or the object store)."""
    return cast(JobArtifacts, request.app.state.artifacts)


def get_job_repository(request: Request) -> JobRepository:
    return cast(JobRepository, request.app.state.job_repository)


def get_sweep_repository(request: Request) -> SweepRepository:
    return cast(SweepRepository, request.app.state.sweep_repository)


def get_job_queue(request: Request) -> JobQueue:
    return cast(JobQueue, request.app.state.job_queue)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
StoresDep = Annotated[Stores, Depends(get_stores)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
ArtifactsDep = Annotated[JobArtifacts, Depends(get_artifacts)]
JobRepositoryDep = Annotated[JobRepository, Depends(get_job_repository)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
SweepRepositoryDep = Annotated[SweepRepository, Depends(get_sweep_repository)]
