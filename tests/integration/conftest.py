"""Job-queue backends for integration tests: the embedded default (filesystem broker +
SQLite) and production's Redis + PostgreSQL.

Redis/PostgreSQL come from TOONFORGE_TEST_REDIS_URL / TOONFORGE_TEST_POSTGRES_URL (defaults:
the local servers). When they are unreachable the Redis/PostgreSQL cases skip, except in CI
(CI=true), where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.support.processes import WorkerPool

# db 15: away from the db 0 a developer's `make run` with Redis would use
REDIS_URL = os.environ.get("TOONFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# psycopg URLs to a database we may create databases from; the first that answers is used.
POSTGRES_URLS = [u for u in os.environ.get("TOONFORGE_TEST_POSTGRES_URL", "").split(",") if u] or [
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
]

# Short leases and fast polling so lost workers are noticed within seconds.
FAST_JOBS = {
    "TOONFORGE_JOB_HEARTBEAT_S": "0.5",
    "TOONFORGE_JOB_LEASE_S": "3",
    "TOONFORGE_JOB_CANCEL_POLL_S": "0.2",
    "TOONFORGE_JOB_PROGRESS_INTERVAL_S": "0.2",
    "TOONFORGE_WEBHOOK_TIMEOUT_S": "2",
    # The webhook receivers of these tests listen on loopback, which is refused otherwise.
    "TOONFORGE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    # One training thread per worker: the tests share two cores with the test process.
    "OMP_NUM_THREADS": "1",
}


def unavailable(what: str, why: object) -> None:
    message = f"{what} unreachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the Redis/PostgreSQL tests must run in CI)")
    pytest.skip(message)


def redis_or_skip() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    return REDIS_URL


def postgres_admin_url_or_skip() -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    errors = []
    for url in POSTGRES_URLS:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return url
        except Exception as exc:
            errors.append(f"{url}: {exc}")
    unavailable("PostgreSQL", "; ".join(errors))
    raise AssertionError("unreachable")


def _admin(url: str, sql: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql)


@dataclass
class JobBackend:
    """One test's private job world: database, broker queue, store and data directories."""

    name: str
    env: dict[str, str]
    root: Path
    cleanups: list = field(default_factory=list)

    def settings(self, **overrides: object):
        from core.settings import Settings

        values = {k.removeprefix("TOONFORGE_").lower(): v for k, v in self.env.items()
                  if k.startswith("TOONFORGE_")}
        return Settings(**{**values, **overrides})

    @property
    def store_dir(self) -> Path:
        return Path(self.env["TOONFORGE_STORE_DIR"])


@pytest.fixture(params=["embedded", "redis-postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobBackend]:
    env = {
        "TOONFORGE_DATA_DIR": str(tmp_path / "data"),
        "TOONFORGE_STORE_DIR": str(tmp_path / "store"),
        "TOONFORGE_JOB_QUEUE": f"toonforge-test-{uuid.uuid4().hex[:12]}",
        **FAST_JOBS,
    }
    backend = JobBackend(request.param, env, tmp_path)
    if request.param == "redis-postgres":
        env["TOONFORGE_BROKER_URL"] = redis_or_skip()
        admin = postgres_admin_url_or_skip()
        from sqlalchemy.engine import make_url

        db_name = f"toonforge_test_{uuid.uuid4().hex[:12]}"
        _admin(admin, f'CREATE DATABASE "{db_name}"')
        env["TOONFORGE_DATABASE_URL"] = make_url(admin).set(database=db_name).render_as_string(
            hide_password=False)
        backend.cleanups.append(lambda: _admin(admin, f'DROP DATABASE "{db_name}" WITH (FORCE)'))

        def drop_queue() -> None:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            queue = env["TOONFORGE_JOB_QUEUE"].encode()
            # the queue list and kombu's binding sets are named after the (unique) queue
            for key in client.scan_iter(match=b"*" + queue + b"*"):
                client.delete(key)
            # a killed worker's unacknowledged message stays in kombu's shared "unacked" hash
            for tag, message in client.hscan_iter("unacked"):
                if queue in message:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)

        backend.cleanups.append(drop_queue)
    yield backend
    for cleanup in reversed(backend.cleanups):
        cleanup()


@pytest.fixture()
def embedded_backend(tmp_path: Path) -> JobBackend:
    """The default setup only, for tests whose point does not depend on the backend."""
    env = {"TOONFORGE_DATA_DIR": str(tmp_path / "data"),
           "TOONFORGE_STORE_DIR": str(tmp_path / "store"), **FAST_JOBS}
    return JobBackend("embedded", env, tmp_path)


@pytest.fixture()
def workers(request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    """Worker processes for the test's backend (``backend`` or ``embedded_backend``)."""
    name = "backend" if "backend" in request.fixturenames else "embedded_backend"
    jb: JobBackend = request.getfixturevalue(name)
    pool = WorkerPool(jb.env, jb.root / "logs")
    yield pool
    pool.stop_all()


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"event": self.headers["X-Toonforge-Event"],
                                    "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP receiver on loopback: (url, the webhook calls it received)."""
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()
