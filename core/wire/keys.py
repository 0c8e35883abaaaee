"""API keys on the wire (docs/SECURITY.md): create, list, revoke; never a stored secret."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

ApiScope = Literal["infer", "train", "admin"]


class KeyLimitsBody(BaseModel):
    """A key's own limits; null (or absent) takes the server's setting, 0 means no limit."""

    model_config = ConfigDict(extra="forbid")

    # Strict types: false must not be stored as 0 (= no limit), nor "5" as 5.
    rps: StrictFloat | None = Field(None, ge=0,
                                    description="requests per second (bucket refill)")
    burst: StrictInt | None = Field(None, ge=1, le=1_000_000, description="bucket size")
    max_running_jobs: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_queued_jobs: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_dataset_bytes: StrictInt | None = Field(None, ge=0, le=2**62)
    max_dataset_files: StrictInt | None = Field(None, ge=0, le=2**31 - 1)


# The key-name rule as a schema pattern (jobs/keys.py checks str.isprintable(), which also
# refuses a few rarer invisible characters).
KEY_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="who or what uses the key:"
                      " printable characters, at least one that is not a space (the server"
                      " strips surrounding spaces)",
                      json_schema_extra={"pattern": KEY_NAME_PATTERN})
    scopes: list[ApiScope] = Field(min_length=1, max_length=3,
                                   description="admin grants train and infer too")
    limits: KeyLimitsBody = Field(default_factory=KeyLimitsBody)


class KeyView(BaseModel):
    """An API key as listed (never its secret)."""

    id: str = Field(description="the key's id: the <key_id> of tf_<key_id>_<secret>")
    name: str
    scopes: list[ApiScope]
    created_at: datetime
    revoked_at: datetime | None
    limits: KeyLimitsBody


class KeyCreated(KeyView):
    key: str = Field(description="the key itself, shown only in this answer")
