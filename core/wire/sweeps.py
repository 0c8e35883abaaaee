"""Hyper-parameter sweeps on the wire (jobs/sweeps.py, docs/JOBS.md "Sweeps")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from core.task_names import TaskName
from core.wire.jobs import FinetuneRequest, JobStatus


class SweepRequest(BaseModel):
    """POST /sweeps body: a base job and the hyper-parameter values to try, as a grid
    (every combination) or as an explicit list of points; exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    base: FinetuneRequest = Field(description="the job every point starts from; each point's"
                                  " values replace its hyperparameters of the same name")
    # The limits below are the server's own checks (jobs/sweeps.expand), stated in the
    # schema; the count's bound is the setting sweep_max_points (16 by default, 1000 at most).
    grid: dict[str, list[Any]] | None = Field(
        None, description="hyper-parameter -> values: one point per combination (cartesian"
        " product, keys in the order given); exactly one of grid and points; at least one"
        " hyper-parameter, each with at least one value; the product of the list lengths is"
        " at most the server's sweep_max_points (default 16)",
        json_schema_extra={"minProperties": 1,
                           "additionalProperties": {"type": "array", "minItems": 1}})
    points: list[dict[str, Any]] | None = Field(
        None, description="explicit points, each a hyper-parameter -> value object setting at"
        " least one; exactly one of grid and points; 1 to the server's sweep_max_points"
        " (default 16) of them",
        json_schema_extra={"minItems": 1, "maxItems": 1000,
                           "items": {"type": "object", "minProperties": 1}})
    auto_activate: StrictBool = Field(
        False, description="whether each point's job may activate its version (base's"
        " auto_activate is not used: N jobs activating one model line would race, and the"
        " last to pass the gate would win, not the best)")


class SweepEpoch(BaseModel):
    """The gate metric of one point's job at the end of one epoch."""

    epoch: int
    value: float | None


class SweepPoint(BaseModel):
    """One point of a sweep: its values and how its job stands."""

    index: int
    values: dict[str, Any] = Field(description="the swept hyper-parameters of this point")
    job_id: str
    status: JobStatus
    epoch: int = Field(description="epochs completed")
    total_epochs: int | None
    final_metric: float | None = Field(description="the gate metric after the last epoch")
    best_metric: float | None = Field(description="the best gate metric of any epoch")
    best_epoch: int | None
    published_metric: float | None = Field(description="the gate metric of the published"
                                           " weights")
    result_version: str | None = Field(description="'model@n' published by the job")
    activated: bool
    activation_reason: str | None
    error: str | None
    series: list[SweepEpoch] = Field(description="the gate metric per epoch, in order")


class SweepView(BaseModel):
    """GET /sweeps/{id}: the points side by side."""

    id: str
    created_at: datetime
    task: TaskName
    base: FinetuneRequest
    grid: dict[str, list[Any]] | None
    auto_activate: bool
    metric: str | None = Field(description="the task's gate metric (null: the task has none)")
    direction: Literal["min", "max"] | None = Field(description="which way is better")
    best_index: int | None = Field(description="the point with the best published (else best)"
                                   " metric so far")
    status_counts: dict[str, int] = Field(description="points per job status")
    points: list[SweepPoint]


class SweepSummary(BaseModel):
    """A sweep as listed (GET /sweeps)."""

    id: str
    created_at: datetime
    task: TaskName
    dataset_id: str
    target_model: str
    keys: list[str] = Field(description="the swept hyper-parameter names")
    job_ids: list[str]


class SweepPage(BaseModel):
    sweeps: list[SweepSummary]
    total: int
    limit: int
    offset: int
