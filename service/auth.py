"""Who is calling, and may they: API keys, scopes and the request-rate limit, as route
dependencies.

Scopes (docs/SECURITY.md): ``infer`` (inference, ``GET /models*``), ``train`` (``/datasets*``,
``/jobs*``), ``admin`` (activate, rollback, dataset delete; it also grants ``train`` and
``infer``). A route declares its scope with ``dependencies=[scope("train")]`` or a parameter
``caller: TrainCaller`` (both may appear: FastAPI runs the dependency once per request).

A key is sent as ``Authorization: Bearer tf_<id>_<secret>`` (jobs/keys.py). For each
request:

- no ``Authorization`` header: an anonymous caller when the scope is open (setting
  ``open_scopes``, default ``infer``), else 401 ``unauthorized``;
- a malformed header, or a key that is unknown, wrong or revoked: 401 ``unauthorized``,
  **also on an open scope** -- a client that sends a key means to use it, and silently
  serving it as anonymous would hide a typo or a revoked key until the scope is closed;
- a valid key without the scope (and the scope not open): 403 ``forbidden``;
- then the caller's token bucket (service/ratelimit.py): 429 ``rate_limited``.

401 answers carry ``WWW-Authenticate: Bearer``; 429 answers ``Retry-After``. ``/healthz``,
``/readyz``, ``/metrics``, the OpenAPI document, ``/docs`` and the web page declare no scope
and stay open.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from jobs.keys import SCOPES, ApiKey, CachedVerifier, KeyLimits, KeyStore
from service.errors import envelope, error_responses
from service.ratelimit import AccessError, RateLimiter, redis_url_for, resolve_limits

log = logging.getLogger(__name__)

Scope = Literal["infer", "train", "admin"]
REALM = 'Bearer realm="toonforge"'
# What a scope also grants.
IMPLIES: dict[str, frozenset[str]] = {"admin": frozenset(SCOPES)}
KEY_STORE_RETRY_S = 5


# ----------------------------------------------------------------------------- errors


class Unauthorized(AccessError):
    code = "unauthorized"
    http_status = 401

    def __init__(self, message: str, *, bad_token: bool = False) -> None:
        challenge = f'{REALM}, error="invalid_token"' if bad_token else REALM
        super().__init__(message, {"WWW-Authenticate": challenge})


class Forbidden(AccessError):
    code = "forbidden"
    http_status = 403

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message, {
            "WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'})


class KeyStoreUnavailable(AccessError):
    """The key database cannot be read and this process has no recent answer for the key."""

    code = "auth_unavailable"
    http_status = 503

    def __init__(self) -> None:
        super().__init__("the API key database is unreachable; try again shortly",
                         {"Retry-After": str(KEY_STORE_RETRY_S)})


# ----------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: ``key_id`` None is an anonymous caller of an open scope."""

    key_id: str | None
    name: str
    scopes: frozenset[str]
    limits: KeyLimits  # resolved: the key's own values, the settings' defaults for the rest
    client: str  # the client address (the rate-limit bucket of anonymous callers)

    @property
    def bucket(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"ip:{self.client}"


def granted(scopes: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """The scopes a key's scopes grant (admin grants all)."""
    out = set(scopes)
    for scope in scopes:
        out |= IMPLIES.get(scope, frozenset())
    return frozenset(out)


class Access:
    """One per API process (``app.state.access``): keys, open scopes, rate limiter."""

    def __init__(self, settings: Settings, keys: KeyStore, limiter: RateLimiter) -> None:
        self.settings = settings
        self.keys = keys
        self.verifier = CachedVerifier(keys.verify, settings.api_key_cache_s)
        self.limiter = limiter
        self.open_scopes = frozenset(settings.open_scopes)

    @classmethod
    def start(cls, settings: Settings, sessions: sessionmaker[Session]) -> Access:
        """Blocking (reads or creates the server secret): call it off the event loop."""
        access = cls(settings, KeyStore.open(sessions, settings.api_key_secret),
                     RateLimiter(redis_url_for(settings)))
        closed = [s for s in SCOPES if s not in access.open_scopes]
        log.info("access: open scopes (no API key needed): %s; a key is needed for: %s;"
                 " rate-limit buckets: %s", ", ".join(sorted(access.open_scopes)) or "none",
                 ", ".join(closed) or "nothing", access.limiter.backend)
        privileged = sorted(access.open_scopes & {"train", "admin"})
        if privileged:
            log.warning("access: %s open to anyone without a key (TOONFORGE_OPEN_SCOPES)",
                        " and ".join(privileged))
        return access

    async def close(self) -> None:
        await self.limiter.close()

    async def _verify(self, token: str) -> ApiKey | None:
        hit, key = self.verifier.cached(token)
        if hit:
            return key
        try:
            return await asyncio.to_thread(self.verifier.verify, token)
        except Exception as exc:
            log.warning("API key check failed: the key database did not answer (%s)",
                        type(exc).__name__)
            raise KeyStoreUnavailable() from exc

    async def authorize(self, request: Request, scope: str) -> Caller:
        client = request.client.host if request.client else "unknown"
        header = request.headers.get("authorization")
        if header is None:
            if scope not in self.open_scopes:
                raise Unauthorized(f"this operation needs an API key with the {scope!r} scope:"
                                   " send Authorization: Bearer <key>")
            caller = Caller(None, "anonymous", self.open_scopes,
                            resolve_limits(None, self.settings), client)
        else:
            kind, _, token = header.strip().partition(" ")
            token = token.strip()
            if kind.lower() != "bearer" or not token:
                raise Unauthorized("malformed Authorization header: send Authorization:"
                                   " Bearer <key>", bad_token=True)
            key = await self._verify(token)
            if key is None:
                # Guessing keys costs the client address its anonymous tokens (429 once
                # they are spent), so a brute force is as slow as the rate limit.
                await self.limiter.check(f"ip:{client}", resolve_limits(None, self.settings))
                raise Unauthorized("the API key is invalid or revoked", bad_token=True)
            caller = Caller(key.id, key.name, granted(key.scopes),
                            resolve_limits(key.limits, self.settings), client)
            if scope not in caller.scopes and scope not in self.open_scopes:
                raise Forbidden(f"API key {key.id} has scope(s) {', '.join(key.scopes)};"
                                f" this operation needs {scope!r}", scope)
        await self.limiter.check(caller.bucket, caller.limits)
        return caller


# ----------------------------------------------------------------------------- dependencies


class _BearerScheme(HTTPBearer):
    """The bearer scheme in the OpenAPI document; the header itself is read by Access
    (HTTPBearer would turn a malformed header into "no key", hiding the mistake)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


BEARER = _BearerScheme(
    scheme_name="bearer", bearerFormat="tf_<key_id>_<secret>", auto_error=False,
    description="An API key: `Authorization: Bearer tf_<key_id>_<secret>` (create one with"
    " `toonforge keys create`). The role names of an operation's requirement are the scopes"
    " it needs (infer, train, admin; admin grants all); scopes in the server's open_scopes"
    " need no key.")


@functools.cache
def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """The dependency that admits a caller for ``scope`` (one function per scope, so a
    request that declares it twice runs it once)."""

    async def caller_for_scope(request: Request, _: Annotated[Any, Depends(BEARER)]) -> Caller:
        access: Access = request.app.state.access
        return await access.authorize(request, scope)

    caller_for_scope.__name__ = f"require_{scope}"
    return caller_for_scope


def scope(name: Scope) -> DependsParam:
    """For ``dependencies=[...]`` on a route or router."""
    dependency: DependsParam = Security(require(name), scopes=[name])
    return dependency


TrainCaller = Annotated[Caller, Security(require("train"), scopes=["train"])]


# ----------------------------------------------------------------------------- OpenAPI


def _documented(status: int, code: str, description: str, message: str,
                headers: dict[str, str]) -> dict[str, Any]:
    response = error_responses(status, descriptions={status: description})[status]
    response["content"]["application/json"]["example"] = {
        "error": {"code": code, "message": message}}
    response["headers"] = {name: {"schema": {"type": "string" if name != "Retry-After"
                                             else "integer"}, "description": text}
                           for name, text in headers.items()}
    return response


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented(
        401, "unauthorized", "No API key, a malformed Authorization header, or an invalid or"
        " revoked key (`unauthorized`); a scope in the server's open_scopes needs no key.",
        "this operation needs an API key with the 'train' scope: send Authorization: Bearer"
        " <key>", {"WWW-Authenticate": "Bearer realm=\"toonforge\""}),
    403: _documented(
        403, "forbidden", "The API key lacks the scope this operation needs (`forbidden`).",
        "API key 0f1e2d3c4b5a has scope(s) infer; this operation needs 'train'",
        {"WWW-Authenticate": "Bearer error=\"insufficient_scope\""}),
    429: _documented(
        429, "rate_limited", "Over the caller's request rate (`rate_limited`), or for jobs and"
        " datasets over the key's quota (`quota_exceeded`); Retry-After says when to retry.",
        "too many requests: the limit is 50/s with bursts of 100; retry in 1 s",
        {"Retry-After": "Seconds to wait before retrying (an integer)."}),
}
# 503 where a route declares no 503 of its own: the key database could not be read.
AUTH_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: _documented(
        503, "auth_unavailable", "The API key database is unreachable (`auth_unavailable`).",
        "the API key database is unreachable; try again shortly",
        {"Retry-After": "Seconds to wait before retrying (an integer)."}),
}


def auth_responses(*, with_503: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router or route with a scope (a route's own entries win)."""
    return {**AUTH_RESPONSES, **(AUTH_UNAVAILABLE if with_503 else {})}


# ----------------------------------------------------------------------------- install


def install_access(app: FastAPI) -> None:
    """Render ``AccessError`` (401, 403, 429, 503 of this module and ratelimit.py) as the
    envelope, with its headers; ``app.state.access`` is set by the app's lifespan."""

    async def access_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, AccessError)
        response = envelope(exc.http_status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response

    app.add_exception_handler(AccessError, access_error)
