"""Dependencies of the routes, as ``Annotated`` aliases (one place to change wiring)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jobs.queue import JobQueue
from jobs.repository import JobRepository
from model_store.store import ModelStore
from service.config import Settings
from service.inference.pool import InferencePool


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> InferencePool:
    return request.app.state.pool


def get_store(request: Request) -> ModelStore:
    return request.app.state.pool.store


def get_job_repository(request: Request) -> JobRepository:
    return request.app.state.job_repository


def get_job_queue(request: Request) -> JobQueue:
    return request.app.state.job_queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
JobRepositoryDep = Annotated[JobRepository, Depends(get_job_repository)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
