"""API keys over HTTP (admin scope): create, list, revoke. ``toonforge keys`` does the same
on the database directly (how the first admin key is made); docs/SECURITY.md."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from core.wire import KeyCreated, KeyCreateRequest, KeyLimitsBody, KeyView
from jobs.keys import ApiKey, KeyLimits, KeyStore
from service.auth import auth_responses, scope
from service.errors import error_responses

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[scope("admin")],
                   responses=auth_responses())


def _store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.access.keys
    return store


def _view(key: ApiKey) -> KeyView:
    return KeyView(id=key.id, name=key.name, scopes=list(key.scopes),
                   created_at=key.created_at, revoked_at=key.revoked_at,
                   limits=KeyLimitsBody(**key.limits.as_dict()))


@router.post("", operation_id="create_key", status_code=201,
             responses=error_responses(413, 422, 500))
async def create_key(request: Request, body: KeyCreateRequest) -> KeyCreated:
    """Make an API key; the answer is the only place its plaintext `key` ever appears."""
    key, plaintext = await run_in_threadpool(
        _store(request).create, body.name, body.scopes, KeyLimits(**body.limits.model_dump()))
    return KeyCreated(**_view(key).model_dump(), key=plaintext)


@router.get("", operation_id="list_keys", responses=error_responses(422, 500))
async def list_keys(request: Request, include_revoked: bool = Query(
        True, description="false: only keys that still work")) -> list[KeyView]:
    """Every API key, oldest first (id, name, scopes, times, own limits; never a secret)."""
    keys = await run_in_threadpool(
        lambda: _store(request).list(include_revoked=include_revoked))
    return [_view(key) for key in keys]


_REVOKE_ERRORS = error_responses(404, 422, 500, descriptions={
    404: "No key with this id (`key_not_found`)."})
_REVOKE_ERRORS[404]["content"]["application/json"]["example"] = {
    "error": {"code": "key_not_found", "message": "no API key '0f1e2d3c4b5a'"}}


@router.delete("/{key_id}", operation_id="revoke_key", responses=_REVOKE_ERRORS)
async def revoke_key(request: Request, key_id: str = Path(max_length=32)) -> KeyView:
    """Revoke a key: the process that answers refuses it at once, every other API process
    within TOONFORGE_API_KEY_CACHE_S (5 s). Revoking a revoked key changes nothing."""
    revoked = await run_in_threadpool(_store(request).revoke, key_id)
    request.app.state.access.verifier.forget(key_id)
    return _view(revoked)
