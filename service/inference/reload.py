"""The reload watcher: follows every model's ``active`` pointer in the store.

Two ways a pointer move reaches this process:

- **Announcements** (when a Redis is configured, ``reload_redis_url``): whoever activates
  publishes ``{model, version, by}`` on a Redis channel (model_store/notify.py); this
  watcher subscribes and re-reads that model's pointer at once, so every replica starts
  loading within milliseconds of the activation. The message is only a hint: the pointer
  is re-read, never the message's version trusted.
- **The poll** (always): each tick reads the pointers (a directory listing and one tiny
  file per model). It is the fallback for a Redis that is down, and for anything said
  while this process was not listening: pub/sub keeps nothing, so each (re)connection is
  followed by a full sync. A lost connection is retried with backoff.

Only a change costs more: the pool loads the new version in its loader thread, warms it up
and swaps it in, while requests already running finish on the version they hold. The
poll's tick also hands freed heap back to the OS once the pool has been idle for a while
after a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Literal

from core.settings import Settings
from model_store.notify import Activation, reload_redis_url, replica_id
from model_store.store import NAME_RE
from service.inference.pool import InferencePool

log = logging.getLogger(__name__)

# Reconnection backoff after a lost or refused Redis connection: doubles up to the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 2.0
# A PING this often while subscribed; nothing at all heard for STALE_S means a dead link
# (a host that vanished sends no reset), so the watcher reconnects.
PING_EVERY_S = 5.0
STALE_S = 3 * PING_EVERY_S


class ReloadWatcher:
    def __init__(self, pool: InferencePool, interval_s: float, *,
                 redis_url: str | None = None, channel: str = "toonforge:activations",
                 replica: str = "") -> None:
        self._pool = pool
        self._interval_s = interval_s
        self.redis_url = redis_url
        self.channel = channel
        self.replica = replica
        self.connected = False  # subscribed to the announcements right now
        self._linked = False  # the current attempt got as far as subscribing
        self._tasks: list[asyncio.Task[None]] = []
        self._syncs: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, pool: InferencePool, settings: Settings) -> ReloadWatcher:
        return cls(pool, settings.reload_poll_s, redis_url=reload_redis_url(settings),
                   channel=settings.reload_redis_channel, replica=replica_id(settings))

    @property
    def mode(self) -> Literal["redis", "poll"]:
        """How activations reach this process: announcements (plus the poll), or the poll."""
        return "redis" if self.redis_url else "poll"

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(), name="reload-watcher")]
        if self.redis_url:
            self._tasks.append(asyncio.create_task(self._listen(self.redis_url),
                                                   name="reload-announcements"))

    async def stop(self) -> None:
        tasks = self._tasks + list(self._syncs)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self.connected = [], False
        self._syncs.clear()

    # ------------------------------------------------------------------ the poll
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._pool.sync_all()
                await self._pool.trim_when_idle()  # give a burst's heap back once quiet
            except Exception:  # a bad tick must never end the watcher
                log.exception("reload watcher tick failed; retrying next tick")

    # ------------------------------------------------------------------ announcements
    async def _listen(self, url: str) -> None:
        """Subscribe, and stay subscribed: reconnect with backoff for as long as we run."""
        backoff, outage_logged = BACKOFF_FIRST_S, False
        while True:
            self._linked = False
            try:
                await self._subscribed(url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._linked:  # it worked until now: a new outage, retry soon
                    backoff, outage_logged = BACKOFF_FIRST_S, False
                # Loud once per outage; quiet while retrying, so a long outage is one line.
                (log.debug if outage_logged else log.warning)(
                    "activation announcements unavailable (%s: %s); polling every %.1f s,"
                    " reconnecting in %.1f s", type(exc).__name__, exc, self._interval_s,
                    backoff)
                outage_logged = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _subscribed(self, url: str) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No silent reconnects inside redis-py: each one must be seen here, because what
        # was published while away is gone and needs a full sync.
        client = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                         retry=Retry(NoBackoff(), 0))
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self.connected = self._linked = True
            log.info("listening for activations on Redis channel %s", self.channel)
            # Anything announced while we were not listening: catch up now, not at the poll.
            self._spawn(self._pool.sync_all())
            heard = pinged = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None:
                    heard = now
                    if message.get("type") == "message":
                        self._on_message(message.get("data"))
                if now - heard > STALE_S:
                    raise TimeoutError(f"no answer from Redis for {STALE_S:.0f} s")
                if now - pinged >= PING_EVERY_S:
                    await pubsub.ping()
                    pinged = now
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _on_message(self, data: object) -> None:
        if not isinstance(data, str | bytes):
            return
        try:
            activation = Activation.from_json(data)
        except ValueError as exc:
            log.warning("ignored a message on %s that is no activation: %s", self.channel, exc)
            return
        if not NAME_RE.fullmatch(activation.model):
            log.warning("ignored an activation of an invalid model name on %s", self.channel)
            return
        log.info("activation of %s@%s announced by %s; syncing now", activation.model,
                 activation.version, activation.by or "?")
        self._spawn(self._pool.sync_model(activation.model))

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run a sync beside the listener, which keeps reading (one load per model at a
        time: the pool's per-model lock and its single loader thread)."""
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("sync after an activation announcement failed; the poll retries")

        task = asyncio.create_task(run(), name="reload-announced")
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)
