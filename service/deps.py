"""Dependencies of the routes, as ``Annotated`` aliases (one place to change wiring)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from model_store.store import ModelStore
from service.config import Settings
from service.inference.pool import InferencePool


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> InferencePool:
    return request.app.state.pool


def get_store(request: Request) -> ModelStore:
    return request.app.state.pool.store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
