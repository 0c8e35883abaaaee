"""API keys, scopes and per-key limits against the real API under uvicorn (docs/SECURITY.md).

- the auth matrix: EVERY operation of the live OpenAPI document x {no key, a key without the
  operation's scope, a key with it} -> 401 / 403 / neither, in the JSON envelope; every route
  of the app is either in that document with its scope or in the list of open routes, so a
  new route cannot be forgotten;
- the ``toonforge keys`` admin command (create, list, revoke) against the server's database;
  a revocation takes effect within the key cache time;
- a bad key on an open scope is a 401; anonymous callers get the open scopes only;
- the request-rate bucket (429 + Retry-After), the queued-jobs quota (no worker runs, so jobs
  stay queued), the dataset quotas, and a bucket shared by two API processes through Redis;
- the SDK's and the CLI's ``api_key``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from toonforge_client import Client, ForbiddenError, TooManyRequestsError, UnauthorizedError
from toonforge_client.cli import main as toonforge

from core.settings import Settings
from jobs.db import Database
from jobs.keys import ApiKeyRecord, CachedVerifier, KeyLimits, KeyStore, parse_key
from service.ratelimit import LocalBuckets, RateLimiter
from tests.api.test_inputs import assert_error
from tests.conftest import IN_CI
from tests.support.archives import good_files, zip_bytes
from tests.support.server import REPO, ApiServer

# Every operation's scope; the matrix fails on an operation missing here (a new route).
SCOPE_OF: dict[tuple[str, str], str] = {
    **{("post", p): "infer" for p in (
        "/cartoonize", "/matte", "/classify", "/generate", "/autoencode",
        "/autoencode/interpolate", "/autoencode/sample", "/infer/{task}", "/portrait")},
    ("get", "/styles"): "infer",
    ("get", "/models"): "infer", ("get", "/models/{name}"): "infer",
    ("get", "/models/{name}/versions/{version}"): "infer",
    ("post", "/models/{name}/activate"): "admin", ("post", "/models/{name}/rollback"): "admin",
    ("post", "/keys"): "admin", ("get", "/keys"): "admin", ("delete", "/keys/{key_id}"): "admin",
    ("post", "/datasets"): "train", ("get", "/datasets"): "train",
    ("get", "/datasets/{dataset_id}"): "train", ("delete", "/datasets/{dataset_id}"): "admin",
    **{(m, p): "train" for m, p in (
        ("post", "/jobs/finetune"), ("get", "/jobs"), ("get", "/jobs/{job_id}"),
        ("post", "/jobs/{job_id}/cancel"), ("post", "/jobs/{job_id}/resume"),
        ("get", "/jobs/{job_id}/events"), ("get", "/jobs/{job_id}/metrics"),
        ("get", "/jobs/{job_id}/samples"), ("get", "/jobs/{job_id}/samples/{name}"),
        ("post", "/sweeps"), ("get", "/sweeps"), ("get", "/sweeps/{sweep_id}"))},
}
# Open to anyone whatever open_scopes says (declared without a scope).
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
              "/docs/oauth2-redirect", "/redoc", "/docs/assets", "/", "/static"}
PATH_VALUES = {"name": "x", "version": "1", "task": "x", "dataset_id": "x",
               "job_id": "0" * 32, "key_id": "0" * 12, "sweep_id": "0" * 32}
# A key of each kind: one lacking the scope, one having it.
WRONG = {"infer": "train", "train": "infer", "admin": "infer,train"}
RIGHT = {"infer": "infer", "train": "train", "admin": "admin"}


def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``toonforge keys ...`` through the client CLI and its admin entry point."""
    env = {**os.environ, "TOONFORGE_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "toonforge_client.cli", "keys", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-data")


@pytest.fixture(scope="module")
def locked(tiny_store: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ApiServer]:
    """Nothing open: every scope needs a key; keys are re-checked after 1 s."""
    server = ApiServer(tiny_store, tmp_path_factory.mktemp("auth-logs") / "locked.log",
                       {"TOONFORGE_DATA_DIR": str(data_dir), "TOONFORGE_OPEN_SCOPES": "",
                        "TOONFORGE_API_KEY_CACHE_S": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(locked: ApiServer, data_dir: Path) -> Iterator[KeyStore]:
    """The server's key table, written directly (the CLI has its own test)."""
    db = Database(Settings(_env_file=None, data_dir=data_dir).jobs_database_url)
    yield KeyStore.open(db.sessions, None)
    db.dispose()


@pytest.fixture(scope="module")
def tokens(keys: KeyStore) -> dict[str, str]:
    """scopes (comma list) -> a key with them."""
    return {scopes: keys.create(f"matrix {scopes}", scopes.split(","))[1]
            for scopes in {*WRONG.values(), *RIGHT.values()}}


# ------------------------------------------------------------------ the matrix


def test_every_route_is_scoped_or_open(locked: ApiServer) -> None:
    from fastapi.routing import APIRoute, iter_route_contexts
    from starlette.routing import Mount

    from service.app import create_app

    with locked.client() as http:
        document = http.get("/openapi.json").json()
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == set(SCOPE_OF) | {("get", p) for p in ("/healthz", "/readyz",
                                                                 "/metrics")}
    for (method, path), scope in SCOPE_OF.items():
        assert document["paths"][path][method]["security"] == [{"bearer": [scope]}]
        responses = document["paths"][path][method]["responses"]
        assert {"401", "403", "429"} <= set(responses), (method, path)
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert "Retry-After" in responses["429"]["headers"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for context in iter_route_contexts(create_app(Settings(_env_file=None)).routes):
        route, path = context.original_route, context.path or ""
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                assert (method.lower(), path) in documented, path
                # The route really depends on its scope's check (not only its document).
                wanted = SCOPE_OF.get((method.lower(), path))
                checks = {d.call.__name__ for d in route.dependant.dependencies
                          if d.call.__name__.startswith("require_")}
                assert checks == ({f"require_{wanted}"} if wanted else set()), path
        else:  # the web page, its static files, the documents: open by design
            assert isinstance(route, Mount | APIRoute) or path in OPEN_PATHS, path
            assert path in OPEN_PATHS, f"{path}: neither scoped nor listed as open"


@pytest.mark.parametrize(("method", "path"), sorted(SCOPE_OF))
def test_auth_matrix(locked: ApiServer, tokens: dict[str, str], method: str, path: str
                     ) -> None:
    scope = SCOPE_OF[(method, path)]
    sample = path.endswith("/samples/{name}")
    url = path.format(**{**PATH_VALUES, "name": "epoch_001.png"} if sample else PATH_VALUES)
    with locked.client() as http:
        anonymous = http.request(method, url)
        error = assert_error(anonymous, 401, "unauthorized")
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert scope in error["message"]
        wrong = http.request(method, url, headers=bearer(tokens[WRONG[scope]]))
        assert scope in assert_error(wrong, 403, "forbidden")["message"]
        right = http.request(method, url, headers=bearer(tokens[RIGHT[scope]]))
    assert right.status_code not in (401, 403) and right.status_code < 500, right.text
    if right.status_code >= 400:
        assert set(right.json()) == {"error"}


def test_open_routes_need_no_key(locked: ApiServer) -> None:
    with locked.client() as http:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/",
                     "/static/app.js"):
            assert http.get(path).status_code == 200, path


def test_malformed_and_unknown_keys_are_refused(locked: ApiServer, tokens: dict[str, str]
                                                ) -> None:
    real = tokens["infer"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    with locked.client() as http:
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer nonsense", f"Bearer {forged}",
                       f"Bearer tf_000000000000_{'x' * 43}", f"Token {real}"):
            response = http.get("/models", headers={"Authorization": header})
            assert_error(response, 401, "unauthorized")
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert http.get("/models", headers=bearer(real)).status_code == 200


def test_keys_are_stored_hashed(keys: KeyStore, tokens: dict[str, str]) -> None:
    key_id, secret = parse_key(tokens["infer"]) or ("", "")
    with keys._sessions() as session:
        row = session.get(ApiKeyRecord, key_id)
    assert row is not None and secret not in row.secret_hash and len(row.secret_hash) == 64
    assert keys.verify(tokens["infer"]) is not None


# ------------------------------------------------------------------ admin CLI, revocation


def test_keys_cli_create_list_revoke(locked: ApiServer, data_dir: Path) -> None:
    made = keys_cli(data_dir, "create", "--name", "cli ci", "--scopes", "train,infer",
                    "--rps", "7")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    key_id = parse_key(token)[0] if parse_key(token) else pytest.fail(made.stdout)
    assert "shown only now" in made.stderr
    listed = keys_cli(data_dir, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.startswith(key_id))
    assert "cli ci" in line and "infer,train" in line and "active" in line and "rps=7.0" in line
    assert token not in listed.stdout  # the plaintext is shown once, never listed

    with locked.client() as http:
        assert http.get("/jobs", headers=bearer(token)).status_code == 200
        revoked = keys_cli(data_dir, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        while http.get("/jobs", headers=bearer(token)).status_code == 200:
            assert time.monotonic() - started < 3.0, "revocation not effective in 3 s"
            time.sleep(0.2)
        assert_error(http.get("/jobs", headers=bearer(token)), 401, "unauthorized")
    assert "revoked" in keys_cli(data_dir, "list").stdout.split(key_id)[1].splitlines()[0]

    refused = keys_cli(data_dir, "create", "--name", "x", "--scopes", "root")
    assert refused.returncode == 1 and "unknown scope" in refused.stderr
    missing = keys_cli(data_dir, "revoke", "0123456789ab")
    assert missing.returncode == 1 and "key_not_found" in missing.stderr


def test_keys_over_http(locked: ApiServer, tokens: dict[str, str]) -> None:
    admin = bearer(tokens["admin"])
    with locked.client() as http:
        made = http.post("/keys", headers=admin, json={
            "name": "http", "scopes": ["infer"], "limits": {"rps": 3}})
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["scopes"] == ["infer"] and created["limits"]["rps"] == 3
        assert http.get("/models", headers=bearer(created["key"])).status_code == 200
        listed = http.get("/keys", headers=admin).json()
        mine = next(k for k in listed if k["id"] == created["id"])
        assert "key" not in mine and mine["revoked_at"] is None
        revoked = http.delete(f"/keys/{created['id']}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        active = http.get("/keys", params={"include_revoked": "false"}, headers=admin).json()
        assert created["id"] not in {k["id"] for k in active}
        assert_error(http.delete("/keys/0123456789ab", headers=admin), 404, "key_not_found")
        assert_error(http.post("/keys", headers=admin, json={"name": "x", "scopes": ["root"]}),
                     422, "invalid_parameter")
    with Client(locked.url, api_key=tokens["admin"]) as tf:
        key = tf.create_key(name="sdk", scopes=["train"], max_queued_jobs=1)
        assert key["limits"]["max_queued_jobs"] == 1 and key["key"].startswith("tf_")
        assert tf.revoke_key(key["id"])["revoked_at"] is not None


# ------------------------------------------------------------------ limits


def test_request_rate_is_limited_per_key(locked: ApiServer, keys: KeyStore) -> None:
    _, slow = keys.create("slow", ["infer"], KeyLimits(rps=0.5, burst=2))
    _, other = keys.create("other", ["infer"], KeyLimits(rps=0.5, burst=2))
    with locked.client() as http:
        answers = [http.get("/models", headers=bearer(slow)) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        error = assert_error(answers[2], 429, "rate_limited")
        assert "0.5/s" in error["message"]
        retry = answers[2].headers["Retry-After"]
        assert retry.isdigit() and 1 <= int(retry) <= 2
        # Buckets are per key: another key is not slowed down by this one.
        assert http.get("/models", headers=bearer(other)).status_code == 200


def upload(http: httpx.Client, token: str, dataset_id: str, n: int = 6) -> httpx.Response:
    return http.post("/datasets", params={"task": "autoencode", "id": dataset_id},
                     content=zip_bytes(good_files("autoencode", n=n)),
                     headers={**bearer(token), "content-type": "application/zip"})


def test_queued_jobs_quota(locked: ApiServer, keys: KeyStore) -> None:
    _, token = keys.create("queuer", ["train"], KeyLimits(max_queued_jobs=2))
    _, other = keys.create("queuer 2", ["train"], KeyLimits(max_queued_jobs=1))
    body = {"task": "autoencode", "dataset_id": "quota-jobs", "base": "ae",  # from scratch
            "target_model": "quota-ae", "hyperparameters": {"epochs": 1}}
    with locked.client() as http:
        assert upload(http, token, "quota-jobs").status_code == 201
        ids = []
        for n in range(2):
            created = http.post("/jobs/finetune", json=body,
                                headers={**bearer(token), "Idempotency-Key": f"q-{n}"})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        refused = http.post("/jobs/finetune", json=body, headers=bearer(token))
        error = assert_error(refused, 429, "quota_exceeded")
        assert "2 queued" in error["message"] and refused.headers["Retry-After"].isdigit()
        # An idempotent replay is not a new job: it is answered, not refused.
        replay = http.post("/jobs/finetune", json=body,
                           headers={**bearer(token), "Idempotency-Key": "q-0"})
        assert replay.status_code == 200
        # Quotas are per key.
        assert http.post("/jobs/finetune", json=body, headers=bearer(other)).status_code == 201
        # Cancelling a queued job frees its place.
        assert http.post(f"/jobs/{ids[0]}/cancel", headers=bearer(token)).status_code == 200
        assert http.post("/jobs/finetune", json=body, headers=bearer(token)).status_code == 201


def test_dataset_quotas(locked: ApiServer, keys: KeyStore) -> None:
    key, token = keys.create("uploader", ["train"], KeyLimits(max_dataset_files=6))
    _, tiny = keys.create("tiny", ["train"], KeyLimits(max_dataset_bytes=1000))
    with locked.client() as http:
        first = upload(http, token, "quota-a")
        assert first.status_code == 201, first.text
        assert first.json()["meta"]["owner"] == key.id
        # Full now (6 files): the next upload is refused before its body is used.
        error = assert_error(upload(http, token, "quota-b"), 429, "quota_exceeded")
        assert "6 dataset files" in error["message"]
        # Too big once extracted: refused, and nothing is kept.
        refused = upload(http, tiny, "quota-c")
        assert "not kept" in assert_error(refused, 429, "quota_exceeded")["message"]
        assert refused.headers["Retry-After"].isdigit()
        assert_error(http.get("/datasets/quota-c", headers=bearer(token)), 404,
                     "dataset_not_found")


# ------------------------------------------------------------------ open scopes, SDK, CLI


@pytest.fixture(scope="module")
def infer_open(tiny_store: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ApiServer]:
    """The default: infer open, train and admin behind keys (same database as ``locked``)."""
    server = ApiServer(tiny_store, tmp_path_factory.mktemp("auth-logs") / "open.log",
                       {"TOONFORGE_DATA_DIR": str(data_dir), "TOONFORGE_OPEN_SCOPES": "infer"})
    yield server
    server.stop()


def test_infer_open_by_default(infer_open: ApiServer, tokens: dict[str, str]) -> None:
    with infer_open.client() as http:
        assert http.get("/models").status_code == 200
        assert http.post("/generate").status_code == 200
        assert_error(http.get("/jobs"), 401, "unauthorized")
        assert_error(http.post("/models/matte/rollback"), 401, "unauthorized")
        # A key that cannot infer may still use the open scope...
        assert http.get("/models", headers=bearer(tokens["train"])).status_code == 200
        # ...but a bad key is refused even there: the client meant to send a real one.
        assert_error(http.get("/models", headers=bearer("tf_nope")), 401, "unauthorized")
    assert "open scopes (no API key needed): infer" in infer_open.log()


def test_sdk_and_cli_send_the_key(locked: ApiServer, keys: KeyStore, tokens: dict[str, str],
                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    with Client(locked.url, api_key=tokens["infer"]) as tf:
        assert isinstance(tf.list_models(), list)
        with pytest.raises(ForbiddenError) as forbidden:
            tf.list_jobs()
        assert forbidden.value.code == "forbidden"
    monkeypatch.delenv("TOONFORGE_API_KEY", raising=False)
    with Client(locked.url) as tf, pytest.raises(UnauthorizedError):
        tf.list_models()
    monkeypatch.setenv("TOONFORGE_API_KEY", tokens["train"])
    with Client(locked.url) as tf:
        assert tf.list_jobs()["total"] >= 0
    _, slow = keys.create("sdk slow", ["infer"], KeyLimits(rps=0.2, burst=1))
    with Client(locked.url, api_key=slow) as tf:
        tf.list_models()
        with pytest.raises(TooManyRequestsError) as limited:
            tf.list_models()
        assert limited.value.code == "rate_limited" and limited.value.retry_after >= 1

    monkeypatch.delenv("TOONFORGE_API_KEY")
    assert toonforge(["--url", locked.url, "models", "list"]) == 1
    assert "TOONFORGE_API_KEY" in capsys.readouterr().err
    assert toonforge(["--url", locked.url, "--api-key", tokens["infer"], "models", "list"]) == 0


# ------------------------------------------------------------------ Redis: shared buckets


def redis_url_or_skip() -> str:
    url = os.environ.get("TOONFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis at {url} unreachable: {exc} (CI=true: this test must run)")
        pytest.skip(f"Redis at {url} unreachable: {exc}")
    return url


def test_two_replicas_share_a_bucket_through_redis(tiny_store: Path, data_dir: Path,
                                                   keys: KeyStore, tmp_path: Path) -> None:
    url = redis_url_or_skip()
    _, token = keys.create("shared", ["infer"], KeyLimits(rps=0.2, burst=3))
    env = {"TOONFORGE_DATA_DIR": str(data_dir), "TOONFORGE_OPEN_SCOPES": "",
           "TOONFORGE_RATE_LIMIT_REDIS_URL": url}
    a = ApiServer(tiny_store, tmp_path / "a.log", env)
    try:
        b = ApiServer(tiny_store, tmp_path / "b.log", env)
        try:
            with a.client() as ha, b.client() as hb:
                statuses = [ha.get("/models", headers=bearer(token)).status_code,
                            hb.get("/models", headers=bearer(token)).status_code,
                            ha.get("/models", headers=bearer(token)).status_code]
                assert statuses == [200, 200, 200]
                # Three taken across both replicas: the bucket is empty on each of them.
                assert_error(hb.get("/models", headers=bearer(token)), 429, "rate_limited")
                assert_error(ha.get("/models", headers=bearer(token)), 429, "rate_limited")
            assert "rate-limit buckets: redis" in a.log()
        finally:
            b.stop()
    finally:
        a.stop()


# ------------------------------------------------------------------ units (no server)


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = LocalBuckets(max_entries=2, clock=lambda: now[0])
    assert [buckets.take("k", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 2.0, 3) == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take("k", 2.0, 3) == 0.0
    buckets.take("a", 1.0, 1)
    buckets.take("b", 1.0, 1)  # three names, room for two: the oldest ("k") is dropped
    assert buckets.take("k", 2.0, 3) == 0.0


def test_limiter_uses_local_buckets_while_redis_is_down() -> None:
    import asyncio
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    limiter = RateLimiter(f"redis://127.0.0.1:{port}/0")

    async def two_requests() -> tuple[float, float, float]:
        started = time.monotonic()
        try:
            first = await limiter.take("k", 1.0, 1)
            second = await limiter.take("k", 1.0, 1)
        finally:
            await limiter.close()
        return first, second, time.monotonic() - started

    first, second, elapsed = asyncio.run(two_requests())
    assert first == 0.0 and second > 0.0  # still limited, by this process's bucket
    assert elapsed < 2.0


def test_cached_verifier_bounds_revocation_and_survives_a_database_outage() -> None:
    now = [0.0]
    answers: dict[str, object] = {"tok": "key"}
    calls: list[str] = []

    def verify(token: str):
        calls.append(token)
        answer = answers[token]
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = CachedVerifier(verify, ttl_s=5.0, stale_if_error_s=60.0, max_entries=10,
                           clock=lambda: now[0])
    assert cache.verify("tok") == "key" and cache.verify("tok") == "key" and len(calls) == 1
    answers["tok"] = None  # revoked
    now[0] = 4.9
    assert cache.verify("tok") == "key"  # within the bound: still the cached answer
    now[0] = 5.1
    assert cache.verify("tok") is None  # past it: revoked
    answers["tok"] = RuntimeError("database down")
    now[0] = 11.0
    assert cache.verify("tok") is None  # stale answer used while the database is down
    now[0] = 100.0
    with pytest.raises(RuntimeError):
        cache.verify("tok")


def test_keys_on_postgresql() -> None:
    """The production database: two processes agree on the generated secret, and a key made
    through one store verifies through another."""
    import uuid

    from sqlalchemy.engine import make_url

    from tests.integration.conftest import _admin, postgres_admin_url_or_skip

    admin = postgres_admin_url_or_skip()
    name = f"toonforge_keys_{uuid.uuid4().hex[:12]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        first, second = Database(url), Database(url)
        try:
            first.create_schema()
            second.create_schema()
            one, two = KeyStore.open(first.sessions, None), KeyStore.open(second.sessions, None)
            key, token = one.create("pg", ["train"], KeyLimits(max_dataset_bytes=2**40))
            assert two.verify(token) == key and key.limits.max_dataset_bytes == 2**40
            two.revoke(key.id)
            assert one.verify(token) is None and one.get(key.id).revoked
        finally:
            first.dispose()
            second.dispose()
    finally:
        _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')
