"""Per-key limits: a request-rate token bucket, and job and dataset quotas.

Request rate: one token bucket per API key (``key:<id>``), and for callers without a key
(an open scope) one per client IP (``ip:<address>``, as uvicorn sees it: behind a proxy run
uvicorn with ``--proxy-headers`` so that is the client's, not the proxy's). A bucket holds
``burst`` tokens and refills at ``rps`` per second; a request takes one or is answered 429
``rate_limited`` with ``Retry-After`` (whole seconds until a token is back).

With a Redis URL (setting ``rate_limit_redis_url``, else the broker's when it is
``redis://``) the buckets live in Redis and every API replica shares them: one Lua script
refills and takes atomically, on Redis's own clock (``TIME``), so replicas with skewed
clocks still agree. Without one they live in this process. When Redis does not answer
within 0.5 s the process uses its own buckets for 5 s (logged at most every 30 s): an
outage of the limiter's store must not take inference down with it.

Quotas (429 ``quota_exceeded``): a key's unfinished jobs, counted from the job records'
``owner_key`` when it submits one (POST /jobs/finetune, /jobs/{id}/resume), and the bytes
and files of the datasets it uploaded (their ``meta.json`` ``owner``), checked before an
upload is read and again once its size is known (a dataset that would pass the quota is
removed again).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.errors import DomainError
from jobs.keys import KeyLimits
from model_store.errors import DatasetNotFound

if TYPE_CHECKING:
    from core.settings import Settings
    from jobs.repository import JobRepository
    from model_store.dataset_schema import IngestResult
    from model_store.datasets import DatasetStore

log = logging.getLogger(__name__)

REDIS_PREFIX = "toonforge:ratelimit:"
REDIS_TIMEOUT_S = 0.5
# After a failed call, Redis is left alone this long (requests use local buckets meanwhile),
# so an outage costs one timeout every few seconds, not one per request.
REDIS_RETRY_S = 5.0
FALLBACK_LOG_EVERY_S = 30.0
# What Retry-After says for quotas: a job or a dataset frees its share only when it ends or
# is deleted, which no clock predicts; this is how soon asking again may be worth it.
JOB_QUOTA_RETRY_S = 30
DATASET_QUOTA_RETRY_S = 60


# ----------------------------------------------------------------------------- errors


class AccessError(DomainError):
    """A refusal that carries HTTP headers (``WWW-Authenticate``, ``Retry-After``)."""

    http_status = 429

    def __init__(self, message: str, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.headers = headers or {}


class RateLimited(AccessError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(message, {"Retry-After": str(seconds)}, {"retry_after_s": seconds})


class QuotaExceeded(AccessError):
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)}, details)


# ----------------------------------------------------------------------------- limits


def resolve_limits(own: KeyLimits | None, settings: Settings) -> KeyLimits:
    """A caller's limits: the key's own values, the settings' defaults for the rest."""
    defaults = KeyLimits(
        rps=settings.rate_limit_rps, burst=settings.rate_limit_burst,
        max_running_jobs=settings.key_max_running_jobs,
        max_queued_jobs=settings.key_max_queued_jobs,
        max_dataset_bytes=settings.key_max_dataset_bytes,
        max_dataset_files=settings.key_max_dataset_files,
    )
    if own is None:
        return defaults
    chosen: dict[str, Any] = {k: v for k, v in own.as_dict().items() if v is not None}
    return replace(defaults, **chosen)


def redis_url_for(settings: Settings) -> str | None:
    """Where the buckets live: None means in this process."""
    chosen = settings.rate_limit_redis_url
    if chosen == "memory":
        return None
    if chosen:
        return chosen
    broker = settings.broker_url or ""
    return broker if broker.startswith(("redis://", "rediss://")) else None


# ----------------------------------------------------------------------------- buckets


class LocalBuckets:
    """Token buckets in this process, at most ``max_entries`` (least recently used go)."""

    def __init__(self, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, name: str, rps: float, burst: int) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        tokens, at = self._buckets.get(name, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - at) * rps)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rps
        self._buckets[name] = (tokens, now)
        self._buckets.move_to_end(name)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


# KEYS[1] the bucket; ARGV rate (tokens/s), burst. Returns the wait in seconds, as a string
# (Lua numbers returned to Redis are truncated to integers).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter:
    """The request-rate buckets: in Redis when a URL is given, else in this process."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.local = LocalBuckets()
        self._redis: Any = None
        self._script: Any = None
        self._fallback_logged = -math.inf
        self._skip_redis_until = -math.inf
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                redis_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S)
            self._script = self._redis.register_script(TOKEN_BUCKET_LUA)

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "memory"

    async def take(self, name: str, rps: float, burst: int) -> float:
        """Seconds to wait (0.0: allowed) for one request of the bucket ``name``."""
        if self._script is not None and time.monotonic() >= self._skip_redis_until:
            try:
                wait = await asyncio.wait_for(
                    self._script(keys=[REDIS_PREFIX + name], args=[rps, burst]),
                    timeout=2 * REDIS_TIMEOUT_S)
                return float(wait)
            except Exception as exc:  # any failure: use this process's bucket
                now = time.monotonic()
                self._skip_redis_until = now + REDIS_RETRY_S
                if now - self._fallback_logged >= FALLBACK_LOG_EVERY_S:
                    self._fallback_logged = now
                    log.warning("rate limiter: Redis unavailable (%s); using in-process"
                                " buckets until it answers", type(exc).__name__)
        return self.local.take(name, rps, burst)

    async def check(self, name: str, limits: KeyLimits) -> None:
        """Raise ``RateLimited`` when the bucket is empty; a rate of 0 means no limit."""
        rps = limits.rps or 0.0
        if rps <= 0:
            return
        wait = await self.take(name, rps, int(limits.burst or 1))
        if wait > 0:
            raise RateLimited(f"too many requests: the limit is {rps:g}/s with bursts of"
                              f" {limits.burst}; retry in {max(1, math.ceil(wait))} s", wait)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


# ----------------------------------------------------------------------------- job quota


def check_job_quota(repo: JobRepository, owner: str | None, limits: KeyLimits) -> None:
    """Refuse another job for ``owner`` (None: anonymous callers, together) when it has
    ``max_queued_jobs`` waiting or ``max_running_jobs`` running; 0 means no limit."""
    counts = repo.count_owned(owner)
    queued, running = counts.get("queued", 0), counts.get("active", 0)
    who = f"key {owner}" if owner else "anonymous callers"
    if limits.max_queued_jobs and queued >= limits.max_queued_jobs:
        raise QuotaExceeded(f"{who} already {'has' if owner else 'have'} {queued} queued"
                            f" job(s); the limit is {limits.max_queued_jobs}",
                            JOB_QUOTA_RETRY_S, queued=queued, limit=limits.max_queued_jobs)
    if limits.max_running_jobs and running >= limits.max_running_jobs:
        raise QuotaExceeded(f"{who} already {'has' if owner else 'have'} {running} running"
                            f" job(s); the limit is {limits.max_running_jobs}",
                            JOB_QUOTA_RETRY_S, running=running, limit=limits.max_running_jobs)


# ----------------------------------------------------------------------------- dataset quota


@dataclass(frozen=True)
class DatasetUsage:
    datasets: int
    bytes: int
    files: int


def dataset_usage(store: DatasetStore, owner: str | None) -> DatasetUsage:
    """What ``owner``'s datasets hold (anonymous uploads and datasets older than owners
    count as anonymous)."""
    count = size = files = 0
    for meta in store.list_datasets():
        if getattr(meta, "owner", None) != owner:
            continue
        try:
            accepted = store.report(meta.id).files_accepted
        except (DatasetNotFound, OSError, ValueError):  # deleted meanwhile, or unreadable
            accepted = sum(meta.counts.values())
        count, size, files = count + 1, size + meta.bytes, files + accepted
    return DatasetUsage(count, size, files)


def _dataset_refusal(who: str, usage: DatasetUsage, limits: KeyLimits) -> str | None:
    if limits.max_dataset_bytes and usage.bytes > limits.max_dataset_bytes:
        return (f"{who} would hold {usage.bytes} bytes of datasets; the limit is"
                f" {limits.max_dataset_bytes} (delete a dataset first)")
    if limits.max_dataset_files and usage.files > limits.max_dataset_files:
        return (f"{who} would hold {usage.files} dataset files; the limit is"
                f" {limits.max_dataset_files} (delete a dataset first)")
    return None


def check_dataset_room(store: DatasetStore, owner: str | None, limits: KeyLimits) -> None:
    """Before an upload is read: refuse when the owner's datasets already fill a quota."""
    usage = dataset_usage(store, owner)
    who = f"key {owner}" if owner else "anonymous uploads"
    for used, limit, what in ((usage.bytes, limits.max_dataset_bytes, "bytes of datasets"),
                              (usage.files, limits.max_dataset_files, "dataset files")):
        if limit and used >= limit:
            raise QuotaExceeded(f"{who} already holds {used} {what}; the limit is {limit}"
                                " (delete a dataset first)", DATASET_QUOTA_RETRY_S,
                                bytes=usage.bytes, files=usage.files)


def enforce_dataset_quota(store: DatasetStore, owner: str | None, limits: KeyLimits,
                          result: IngestResult) -> IngestResult:
    """After an upload is stored: if the owner's datasets now pass a quota, delete the new
    one and refuse (its size was unknown until the archive was extracted and scanned)."""
    usage = dataset_usage(store, owner)
    problem = _dataset_refusal(f"key {owner}" if owner else "anonymous uploads", usage, limits)
    if problem is None:
        return result
    try:
        store.delete(result.meta.id)
    except DatasetNotFound:
        pass
    raise QuotaExceeded(f"dataset {result.meta.id!r} was not kept: {problem}",
                        DATASET_QUOTA_RETRY_S, bytes=usage.bytes, files=usage.files,
                        dataset_bytes=result.meta.bytes,
                        dataset_files=result.report.files_accepted)
