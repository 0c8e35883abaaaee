"""API keys: create (the plaintext is shown once), list, revoke, verify.

A key reads ``tf_<key_id>_<secret>``: ``key_id`` (12 hex digits) names the row and is not
secret (it is what ``toonforge keys list`` shows and ``revoke`` takes); ``secret`` is 32
random bytes, URL-safe base64. The database keeps only ``HMAC-SHA256(server secret,
"<key_id>.<secret>")``, so a copy of the database does not give anyone a usable key, and a
verification compares digests with ``hmac.compare_digest`` (constant time). The server
secret is the setting ``api_key_secret`` or, when that is unset, one generated the first
time and kept in the jobs database (``server_secrets``), so every API replica sharing the
database agrees on it without configuration. Changing it invalidates every key.

Verifying a key is one primary-key read; ``CachedVerifier`` keeps each answer for
``api_key_cache_s`` (5 s) per process, so inference is not a database round trip per
request, and a revocation takes effect in every process within that bound.

The tables live here (on the job tables' ``Base``); ``jobs/db.py`` imports this module so
``Database.create_schema`` creates them in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.errors import DomainError, InvalidParameter
from jobs.records import Base, UTCDateTime, utcnow

SCOPES = ("infer", "train", "admin")
KEY_PREFIX = "tf"
SECRET_NAME = "api_key_hmac"
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{20,128}")
MAX_TOKEN_CHARS = 200  # longer Authorization values are refused without hashing them


class KeyNotFound(DomainError):
    code = "key_not_found"
    http_status = 404


# ----------------------------------------------------------------------------- tables


class ApiKeyRecord(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # HMAC-SHA256 hex digest of "<id>.<secret>" under the server secret.
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Per-key limits; None: the setting's default (core/settings.py, "access").
    rps: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_dataset_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_dataset_files: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ServerSecretRecord(Base):
    """Secrets the API replicas must share, generated once (first writer wins)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class KeyLimits:
    """A key's own limits; None takes the setting's default, 0 means no limit."""

    rps: float | None = None
    burst: int | None = None
    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    max_dataset_bytes: int | None = None
    max_dataset_files: int | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


LIMIT_NAMES = tuple(f.name for f in fields(KeyLimits))


@dataclass(frozen=True)
class ApiKey:
    """A key as listed and verified (never its secret nor its hash)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    limits: KeyLimits

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "limits": self.limits.as_dict()}


def _view(row: ApiKeyRecord) -> ApiKey:
    limits = KeyLimits(**{name: getattr(row, name) for name in LIMIT_NAMES})
    return ApiKey(id=row.id, name=row.name, scopes=tuple(row.scopes or ()),
                  created_at=row.created_at, revoked_at=row.revoked_at, limits=limits)


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scopes, deduplicated, in the canonical order; an unknown one is refused."""
    given = {s.strip() for s in scopes if s.strip()}
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise InvalidParameter("scopes", f"unknown scope(s) {', '.join(unknown)};"
                               f" known: {', '.join(SCOPES)}")
    if not given:
        raise InvalidParameter("scopes", f"give at least one of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


def _check_limits(limits: KeyLimits) -> None:
    for name, value in limits.as_dict().items():
        if value is not None and value < 0:
            raise InvalidParameter(name, "must be 0 (no limit) or more")
    if limits.burst is not None and limits.burst < 1:
        raise InvalidParameter("burst", "must be at least 1")


# ----------------------------------------------------------------------------- the store


class KeyStore:
    """The ``api_keys`` table. Thread-safe (each call uses its own short session)."""

    def __init__(self, sessions: sessionmaker[Session],
                 secret: bytes | Callable[[], bytes]) -> None:
        # A callable is read on first use (then kept): an API process can start while the
        # database is down and still serve the open scopes (docs/SECURITY.md).
        self._sessions = sessions
        self._loader = secret if callable(secret) else None
        self._secret = b"" if callable(secret) else self._checked(secret)
        self._secret_lock = threading.Lock()

    @staticmethod
    def _checked(secret: bytes) -> bytes:
        if len(secret) < 16:
            raise ValueError("the API key secret must have at least 16 bytes")
        return secret

    @classmethod
    def open(cls, sessions: sessionmaker[Session], configured: str | None) -> KeyStore:
        """The store keyed with ``configured`` (setting ``api_key_secret``), else with the
        secret kept in the database (generated by the first process that needs one, read
        when a key is first created or checked)."""
        if configured:
            return cls(sessions, configured.encode())
        return cls(sessions, lambda: shared_secret(sessions))

    def _key(self) -> bytes:
        if not self._secret:
            with self._secret_lock:
                if not self._secret and self._loader is not None:
                    self._secret = self._checked(self._loader())
        return self._secret

    def _digest(self, key_id: str, secret: str) -> str:
        return hmac.new(self._key(), f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()

    def create(self, name: str, scopes: Iterable[str], limits: KeyLimits | None = None
               ) -> tuple[ApiKey, str]:
        """A new key; returns it and its plaintext (which is stored nowhere)."""
        name = name.strip()
        if not name or len(name) > 200 or not name.isprintable():
            raise InvalidParameter("name", "give 1 to 200 printable characters")
        ordered = normalize_scopes(scopes)
        limits = limits or KeyLimits()
        _check_limits(limits)
        secret = secrets.token_urlsafe(32)
        for _ in range(5):  # a 48-bit id collides about never; retry rather than fail
            key_id = secrets.token_hex(6)
            row = ApiKeyRecord(id=key_id, name=name, scopes=list(ordered),
                               secret_hash=self._digest(key_id, secret), created_at=utcnow(),
                               revoked_at=None, **limits.as_dict())
            try:
                with self._sessions.begin() as session:
                    session.add(row)
            except IntegrityError:
                continue
            return _view(row), f"{KEY_PREFIX}_{key_id}_{secret}"
        raise RuntimeError("could not pick an unused key id")

    def get(self, key_id: str) -> ApiKey:
        with self._sessions() as session:
            row = session.get(ApiKeyRecord, key_id)
        if row is None:
            raise KeyNotFound(f"no API key {key_id!r}")
        return _view(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key (a second revoke changes nothing); ``KeyNotFound`` if unknown."""
        stmt = (update(ApiKeyRecord)
                .where(ApiKeyRecord.id == key_id, ApiKeyRecord.revoked_at.is_(None))
                .values(revoked_at=utcnow()))
        with self._sessions.begin() as session:
            session.execute(stmt, execution_options={"synchronize_session": False})
        return self.get(key_id)

    def verify(self, token: str) -> ApiKey | None:
        """The live key ``token`` is, else None (malformed, unknown, wrong secret, revoked)."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._sessions() as session:
            row = session.get(ApiKeyRecord, key_id)
        if row is None:
            return None
        if not hmac.compare_digest(row.secret_hash, self._digest(key_id, secret)):
            return None
        key = _view(row)
        return None if key.revoked else key

    # Defined last: inside the class body the name shadows the builtin for type checkers.
    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""
        stmt = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.id)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRecord.revoked_at.is_(None))
        with self._sessions() as session:
            return [_view(row) for row in session.scalars(stmt)]


def shared_secret(sessions: sessionmaker[Session], name: str = SECRET_NAME) -> bytes:
    """The database's secret ``name``, created on first use; concurrent first uses by
    several processes agree (the insert of all but one fails on the primary key)."""
    for _ in range(3):
        with sessions() as session:
            row = session.get(ServerSecretRecord, name)
        if row is not None:
            return row.value.encode()
        try:
            with sessions.begin() as session:
                session.add(ServerSecretRecord(name=name, value=secrets.token_hex(32),
                                               created_at=utcnow()))
        except IntegrityError:
            continue  # another process won: read its value
    raise RuntimeError(f"could not read or create the server secret {name!r}")


# ----------------------------------------------------------------------------- the cache


class CachedVerifier:
    """``KeyStore.verify`` with each answer (a key, or "no such live key") kept for
    ``ttl_s``: a revoked key stops working in this process at most ``ttl_s`` later.

    When the database cannot be read, an answer up to ``stale_if_error_s`` old is used
    instead (a revocation is a database write, so none can have happened that this process
    could have seen), and for the next ``ttl_s`` such answers are given without asking the
    database again; with no such answer the error propagates. Entries are keyed by the
    SHA-256 of the presented token (the plaintext is never kept), bounded to
    ``max_entries`` (oldest dropped first) so a flood of random keys cannot grow it without
    limit.
    """

    def __init__(self, verify: Callable[[str], ApiKey | None], ttl_s: float,
                 stale_if_error_s: float = 300.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._verify = verify
        self._ttl = ttl_s
        self._stale = stale_if_error_s
        self._max = max_entries
        self._clock = clock
        # digest -> (when it was verified, the answer)
        self._entries: OrderedDict[bytes, tuple[float, ApiKey | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._outage_until = 0.0  # until then, stale answers are used without asking

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def _entry(self, token: str, max_age: float) -> tuple[bool, ApiKey | None]:
        with self._lock:
            entry = self._entries.get(self._digest(token))
        if entry is not None and self._clock() - entry[0] < max_age:
            return True, entry[1]
        return False, None

    def forget(self, key_id: str) -> int:
        """Drop every answer that names ``key_id`` (a revocation made by this process takes
        effect here at once, not ``ttl_s`` later); returns how many were dropped."""
        with self._lock:
            doomed = [digest for digest, (_, key) in self._entries.items()
                      if key is not None and key.id == key_id]
            for digest in doomed:
                del self._entries[digest]
        return len(doomed)

    def cached(self, token: str) -> tuple[bool, ApiKey | None]:
        """(hit, key) without touching the database: lets a caller skip a thread hop."""
        return self._entry(token, self._ttl)

    def verify(self, token: str) -> ApiKey | None:
        hit, key = self.cached(token)
        if hit:
            return key
        if self._clock() < self._outage_until:
            # The database just failed: answer from the stale entry without waiting for it
            # again (each wait for a silent database costs its full timeout), for ttl_s.
            hit, key = self._entry(token, self._stale)
            if hit:
                return key
        try:
            key = self._verify(token)
        except Exception:
            hit, key = self._entry(token, self._stale)
            if hit:
                self._outage_until = self._clock() + self._ttl
                return key
            raise
        self._outage_until = 0.0
        digest = self._digest(token)
        with self._lock:
            self._entries[digest] = (self._clock(), key)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return key
