"""Liveness and readiness (/healthz, /readyz) and how activations reach a replica."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from core.task_names import TaskName


class ReloadStatus(BaseModel):
    """How activations reach this replica (/readyz ``reload``)."""

    mode: Literal["redis", "poll"] = Field(
        description="redis: activations are announced on a Redis channel (the poll stays as"
        " the fallback); poll: only the poll of the store's pointers")
    connected: bool = Field(description="subscribed to the announcements now (false in poll"
                            " mode, and while Redis is unreachable: the poll still reloads)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelReadiness(BaseModel):
    name: str
    task: TaskName | None
    active_version: int | None = Field(description="the version the store's pointer names")
    loaded_version: int | None = Field(
        description="the version this process serves (null: none); another than"
        " active_version when that one cannot load (fallback)")
    providers: list[str]
    ready: bool = Field(description="serves a version (or has no active version at all)")
    fallback: bool = Field(
        description="serves the last good version because the active one cannot load"
        " (error says why)")
    error: str | None = Field(description="why the active version could not be loaded")


class Readiness(BaseModel):
    ready: bool = Field(description="every model serves a version (the answer is 200);"
                        " false when one serves nothing (503)")
    models: list[ModelReadiness]
    replica: str = Field(description="which API replica answered (TOONFORGE_REPLICA_ID, else"
                         " host:pid)")
    reload: ReloadStatus
