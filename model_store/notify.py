"""Activation announcements: how every API replica learns at once that a pointer moved.

The store's ``active`` pointer stays the one truth; an announcement is only a hint to look
at it now rather than at the next poll. ``ModelStore.activate`` calls its notifier after
the pointer moved, whoever activates (an API replica, the worker's auto-activation,
``toonforge store activate``), and every API replica's reload watcher subscribes
(service/inference/reload.py) and re-reads that model's pointer on a message. So a lost,
late, repeated or out-of-order message costs nothing but speed: the poll
(``reload_poll_s``) still catches up, and a replica never trusts the version a message
names over the pointer.

Transport: Redis pub/sub on ``reload_redis_channel``, message JSON
``{"model": "matte", "version": 2, "by": "<replica id>"}``. Pub/sub keeps nothing for
subscribers that are away, which is fine here: a replica re-reads every pointer when it
(re)connects. A publish that fails (Redis down, slow) is logged and never fails the
activation: the pointer has already moved and the poll delivers it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis

    from core.settings import Settings

log = logging.getLogger(__name__)

# Connect and reply bound of one publish: an activation waits at most about this long for
# a Redis that does not answer before it gives up the announcement.
PUBLISH_TIMEOUT_S = 0.5
OFF = "off"


@dataclass(frozen=True)
class Activation:
    """One announcement: ``model``'s pointer now names ``version``; ``by`` sent it."""

    model: str
    version: int
    by: str

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "version": self.version, "by": self.by})

    @classmethod
    def from_json(cls, data: str | bytes) -> Activation:
        """Parse a message; ValueError for anything that is not one (never trust a channel
        anyone with the Redis URL can publish on)."""
        try:
            body: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        model, version, by = body.get("model"), body.get("version"), body.get("by", "")
        if not isinstance(model, str) or not model:
            raise ValueError("no model name")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("no version number")
        return cls(model, version, str(by))


class ActivationNotifier(Protocol):
    """What ``ModelStore.activate`` calls once a pointer moved. Must not raise."""

    def announce(self, model: str, version: int) -> None: ...


def replica_id(settings: Settings) -> str:
    """This process's stable name: ``replica_id``, else ``hostname:pid``."""
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"


def reload_redis_url(settings: Settings) -> str | None:
    """The Redis of the announcements: ``reload_redis_url``, else the broker's when it is
    Redis (the way the rate limiter picks its Redis); None: no announcements, poll only."""
    chosen = settings.reload_redis_url
    if chosen == OFF:
        return None
    if chosen:
        return chosen
    broker = settings.broker_url or ""
    return broker if broker.startswith(("redis://", "rediss://")) else None


class RedisNotifier:
    """Publishes each activation on a Redis channel; a failure is a warning, not an error."""

    def __init__(self, url: str, channel: str, by: str,
                 timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self.url, self.channel, self.by = url, channel, by
        self._timeout_s = timeout_s
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            import redis  # only processes that announce need it loaded

            # redis-py's connection pool is thread-safe: one client for every activation.
            self._client = redis.Redis.from_url(
                self.url, socket_connect_timeout=self._timeout_s,
                socket_timeout=self._timeout_s)
        return self._client

    def announce(self, model: str, version: int) -> None:
        message = Activation(model, int(version), self.by).to_json()
        try:
            receivers = self._redis().publish(self.channel, message)
        except Exception as exc:  # the pointer moved; the replicas' poll will see it
            log.warning("could not announce %s@%s on Redis (%s: %s); replicas pick it up"
                        " at their next poll", model, version, type(exc).__name__, exc)
            return
        log.info("announced %s@%s to %s subscriber(s)", model, version, receivers)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def notifier_from_settings(settings: Settings, role: str = "") -> RedisNotifier | None:
    """The notifier every activating process gives its ModelStore (None: no Redis set).

    ``role`` prefixes the sender's name in messages (``worker:host:pid``) for the logs."""
    url = reload_redis_url(settings)
    if url is None:
        return None
    by = replica_id(settings)
    return RedisNotifier(url, settings.reload_redis_channel, f"{role}:{by}" if role else by)
