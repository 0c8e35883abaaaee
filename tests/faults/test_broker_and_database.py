"""The broker or the job database is gone; the API must say so quickly and write nothing.

- Broker dead (nothing listens on its port) and black-holed (a listener that accepts and
  never answers): ``POST /jobs/finetune`` answers 503 ``broker_unavailable`` within the
  stated bound (``broker_connect_timeout_s``, plus a little for the request itself) and
  leaves no job row and no new dataset behind.
- Database down: inference never touches the job database (models come from the store;
  with ``infer`` open no key is looked up), so the inference and catalogue routes keep
  answering while the job routes answer 503 in the JSON envelope. The database is cut
  under a running API through a loopback proxy to the real PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.tiny_models import build_tiny_store
from tests.faults.netfaults import BlackHole, CuttableProxy, dead_port
from tests.integration.conftest import _admin, postgres_admin_url_or_skip
from tests.support.archives import good_files, image_bytes, zip_bytes
from tests.support.server import ApiServer

CONNECT_TIMEOUT_S = 1.0
# The bound a client may rely on: the connect timeout, plus the request's own work (upload
# checks, one database transaction) on a loaded two-core machine.
BOUND_S = CONNECT_TIMEOUT_S * 1.5 + 0.5
OPEN = {"TOONFORGE_OPEN_SCOPES": "infer,train,admin"}
NO_JOB = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
StartApi = Callable[[str], ApiServer]  # broker URL -> a running API using it


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults-store")
    build_tiny_store(root)
    return root


def _finetune_body(dataset_id: str) -> dict[str, Any]:
    return {"task": "generate", "dataset_id": dataset_id, "base": "anime-faces",
            "target_model": "anime-faces", "hyperparameters": {"epochs": 1}}


def _broker_down(server: ApiServer) -> tuple[float, httpx.Response, dict[str, Any],
                                              dict[str, set[str]]]:
    with server.client(timeout=60) as http:
        up = http.post("/datasets", params={"task": "generate"},
                       content=zip_bytes(good_files("generate")),
                       headers={"Content-Type": "application/zip"})
        assert up.status_code == 201, up.text
        dataset_id = up.json()["meta"]["id"]
        datasets_before = {d["id"] for d in http.get("/datasets").json()}
        start = time.monotonic()
        r = http.post("/jobs/finetune", json=_finetune_body(dataset_id),
                      headers={"Idempotency-Key": "fault-1"})
        elapsed = time.monotonic() - start
        jobs = http.get("/jobs").json()
        datasets_after = {d["id"] for d in http.get("/datasets").json()}
        return elapsed, r, jobs, {"before": datasets_before, "after": datasets_after}


def _assert_refused_and_nothing_written(r: httpx.Response, jobs: dict[str, Any],
                                        datasets: dict[str, set[str]]) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "broker_unavailable"
    assert jobs["total"] == 0 and jobs["jobs"] == [], jobs
    assert datasets["after"] == datasets["before"]


@pytest.fixture()
def broker_server(store: Path, tmp_path: Path) -> Iterator[StartApi]:
    servers: list[ApiServer] = []

    def start(broker_url: str) -> ApiServer:
        server = ApiServer(store, tmp_path / f"api-{len(servers)}.log", {
            **OPEN, "TOONFORGE_BROKER_URL": broker_url,
            "TOONFORGE_BROKER_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
            "TOONFORGE_RATE_LIMIT_RPS": "0"})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_dead_broker_answers_503_and_writes_nothing(broker_server: StartApi) -> None:
    server = broker_server(f"redis://127.0.0.1:{dead_port()}/0")
    elapsed, r, jobs, datasets = _broker_down(server)
    _assert_refused_and_nothing_written(r, jobs, datasets)
    assert elapsed < 4 * CONNECT_TIMEOUT_S + 2, f"503 after {elapsed:.2f}s"


def test_dead_broker_answers_503_within_the_bound(broker_server: StartApi) -> None:
    server = broker_server(f"redis://127.0.0.1:{dead_port()}/0")
    elapsed, r, jobs, datasets = _broker_down(server)
    _assert_refused_and_nothing_written(r, jobs, datasets)
    assert elapsed < BOUND_S, f"503 after {elapsed:.2f}s; bound {BOUND_S:.2f}s"


def test_black_holed_broker_answers_503_within_the_bound(broker_server: StartApi) -> None:
    hole = BlackHole()
    try:
        server = broker_server(f"redis://127.0.0.1:{hole.port}/0")
        elapsed, r, jobs, datasets = _broker_down(server)
        assert hole.accepted >= 1  # the API really did reach the black hole
        _assert_refused_and_nothing_written(r, jobs, datasets)
        assert elapsed < BOUND_S, f"503 after {elapsed:.2f}s; bound {BOUND_S:.2f}s"
    finally:
        hole.stop()


# ------------------------------------------------------------------ database down
@pytest.fixture()
def postgres_db() -> Iterator[str]:
    """A fresh database on the local PostgreSQL: its URL (dropped afterwards)."""
    import uuid

    from sqlalchemy.engine import make_url

    admin = postgres_admin_url_or_skip()
    name = f"toonforge_fault_{uuid.uuid4().hex[:10]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


def _inference_answers(http: httpx.Client) -> None:
    png = image_bytes(32, 32)
    for path in ("/classify", "/matte", "/cartoonize", "/autoencode"):
        r = http.post(path, content=png, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, (path, r.text)
    r = http.post("/generate", params={"n": "2", "seed": "1"})
    assert r.status_code == 200, r.text
    assert http.get("/models").status_code == 200
    assert http.get("/healthz").status_code == 200


def test_database_cut_under_a_running_api(store: Path, tmp_path: Path, postgres_db: str
                                          ) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_db)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    server = ApiServer(store, tmp_path / "api.log", {
        **OPEN, "TOONFORGE_DATABASE_URL": url.set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)})
    try:
        with server.client(timeout=30) as http:
            assert http.get("/jobs").status_code == 200  # the database is in use
            proxy.cut()
            _inference_answers(http)
            # A key (well-formed, never seen) must be looked up, and cannot be: a 503 that
            # says so, not a 401 (the key may be fine) and not a 500.
            unknown_key = f"tf_{'0' * 12}_{'s' * 43}"
            r = http.get("/models", headers={"Authorization": f"Bearer {unknown_key}"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "auth_unavailable"
            assert r.headers["Retry-After"].isdigit()
            for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{NO_JOB}"),
                                 ("POST", f"/jobs/{NO_JOB}/cancel")):
                start = time.monotonic()
                r = http.request(method, path)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert set(r.json()["error"]) >= {"code", "message"}, r.text
                assert time.monotonic() - start < 10, path
            assert "Traceback" not in r.text and "psycopg" not in r.text
            _inference_answers(http)  # and still, after the failed job calls
    finally:
        server.stop()
        proxy.cut()


def test_api_starts_and_serves_with_the_database_down(store: Path, tmp_path: Path) -> None:
    """Nothing listens where the database should be, from the start."""
    server = ApiServer(store, tmp_path / "api.log", {
        **OPEN, "TOONFORGE_DATABASE_URL":
        f"postgresql+psycopg://postgres@127.0.0.1:{dead_port()}/test"})
    try:
        with server.client(timeout=30) as http:
            _inference_answers(http)
            r = http.get("/jobs")
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"], r.text
    finally:
        server.stop()


# ------------------------------------------------------------------ database silent
# The database's bounds for this test (jobs/db_timeouts.py): a call to a silent server fails
# after about statement + 0.5 s (the client deadline) + connect (the pool's reconnect).
DB_CONNECT_S, DB_STATEMENT_S = 2.0, 1.0
DB_CALL_S = DB_STATEMENT_S + 0.5 + DB_CONNECT_S
# A keyed job route makes two such calls (the key check, then the route's own), plus the
# request's work on a loaded two-core machine.
DB_BOUND_S = 2 * DB_CALL_S + 2.0


def test_silent_database_is_bounded(store: Path, tmp_path: Path, postgres_db: str) -> None:
    """A database that keeps accepting connections and never answers again: a keyed GET
    /models is served from the key cache and the job routes answer 503
    database_unavailable, each within the stated bound (not after the operating system
    gives up on the connection, minutes later)."""
    from sqlalchemy.engine import make_url

    from jobs.db import Database
    from jobs.keys import KeyStore

    url = make_url(postgres_db)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    server = ApiServer(store, tmp_path / "api.log", {
        "TOONFORGE_OPEN_SCOPES": "", "TOONFORGE_RATE_LIMIT_RPS": "0",
        "TOONFORGE_API_KEY_CACHE_S": "1", "TOONFORGE_DATABASE_URL": via_proxy,
        "TOONFORGE_DATABASE_CONNECT_TIMEOUT_S": str(DB_CONNECT_S),
        "TOONFORGE_DATABASE_STATEMENT_TIMEOUT_S": str(DB_STATEMENT_S)})
    direct = Database(postgres_db)
    try:
        _, token = KeyStore.open(direct.sessions, None).create("silent", ["admin"])
        key = {"Authorization": f"Bearer {token}"}
        with server.client(timeout=60) as http:
            assert http.get("/models", headers=key).status_code == 200  # key now cached
            assert http.get("/jobs", headers=key).status_code == 200  # pool connected
            proxy.silence()
            time.sleep(1.2)  # past the key cache: the next check asks the database
            start = time.monotonic()
            r = http.get("/models", headers=key)
            elapsed = time.monotonic() - start
            assert r.status_code == 200, r.text  # the cached key answered
            assert elapsed < DB_BOUND_S, f"keyed /models after {elapsed:.1f}s"
            for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{NO_JOB}"),
                                 ("POST", f"/jobs/{NO_JOB}/cancel"), ("GET", "/sweeps")):
                start = time.monotonic()
                r = http.request(method, path, headers=key)
                elapsed = time.monotonic() - start
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "database_unavailable", r.text
                assert elapsed < DB_BOUND_S, f"{method} {path} after {elapsed:.1f}s"
            r = http.get("/datasets", headers=key)  # the store, behind the key check
            assert r.status_code == 200, r.text
        assert "no answer within" in server.log()  # the client deadline did its work
    finally:
        server.stop()
        proxy.cut()
        direct.dispose()


def test_statement_and_commit_on_a_silenced_connection_fail_within_the_bound(
        postgres_db: str) -> None:
    """Inside a transaction (no checkout ping in between), a statement and a commit sent to
    a server that went silent fail with a disconnect error once the client deadline
    passes, instead of waiting forever."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from jobs.db import Database, DatabaseTimeouts

    url = make_url(postgres_db)
    for last in ("SELECT 2", None):  # None: the commit is what meets the silence
        proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
        db = Database(url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False), DatabaseTimeouts(connect_s=2, statement_s=DB_STATEMENT_S))
        try:
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
                proxy.silence()
                start = time.monotonic()
                with pytest.raises(OperationalError):
                    if last is not None:
                        conn.execute(text(last))
                    conn.commit()
                elapsed = time.monotonic() - start
            assert elapsed < DB_STATEMENT_S + 0.5 + 2.0, f"failed after {elapsed:.1f}s"
            assert db.deadlines is not None and db.deadlines.cut >= 1
        finally:
            db.dispose()
            proxy.cut()
