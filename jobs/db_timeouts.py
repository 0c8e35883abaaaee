"""Bounded waits on the jobs database: a server that accepts connections and never answers
must turn into an error within a stated time, in the API and in the workers alike.

PostgreSQL gets three bounds:

- ``connect_timeout`` (libpq; whole seconds, at least 2): opening a connection, including
  the start-up exchange a silent server never answers;
- ``statement_timeout`` (server side, through ``options``): a live server cancels a
  statement that runs too long (lock waits included) and says so;
- a client-side deadline, ``StatementDeadlines``: a silent server cannot cancel anything,
  and libpq waits for an answer forever, so a watchdog thread shuts the socket of a
  connection whose statement, commit, rollback or checkout ping has run past the statement
  timeout (plus a grace that lets a live server's own cancel arrive first). The blocked
  call then fails at once with a disconnect error, SQLAlchemy drops the connection, and
  the caller sees ``OperationalError`` (the API answers 503 ``database_unavailable``).

Pooled connections are pinged on checkout under the same deadline (this replaces
``pool_pre_ping``, whose ping cannot be bounded), and a request waits at most
``pool_timeout`` for a free connection. The worst case of one database call against a
silent server is therefore about: ping (statement timeout + grace) + one reconnect
(connect timeout) + the statement itself is never reached (the reconnect fails first).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

log = logging.getLogger(__name__)

# A live server reports its own statement_timeout a little before the socket is cut.
GRACE_S = 0.5
WATCH_INTERVAL_S = 0.05
LIBPQ_MIN_CONNECT_TIMEOUT_S = 2  # libpq treats 1 as 2 and 0 as "wait forever"


def postgres_connect_args(connect_timeout_s: float, statement_timeout_s: float
                          ) -> dict[str, Any]:
    """libpq connection parameters for the two server-visible bounds."""
    return {"connect_timeout": max(LIBPQ_MIN_CONNECT_TIMEOUT_S, math.ceil(connect_timeout_s)),
            "options": f"-c statement_timeout={max(1, int(statement_timeout_s * 1000))}"}


class StatementDeadlines:
    """Cuts the socket of any connection busy past its deadline (one watchdog per engine)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._armed: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.cut = 0  # connections cut so far (for logs and tests)

    def arm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._armed[id(dbapi_connection)] = (
                time.monotonic() + self.timeout_s + GRACE_S, dbapi_connection)
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="db-deadlines",
                                                daemon=True)
                self._thread.start()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._armed.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        while True:
            with self._lock:
                idle = not self._armed
                if idle:
                    self._wake.clear()
            if idle:
                self._wake.wait()
            time.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            with self._lock:
                overdue = [(key, conn) for key, (deadline, conn) in self._armed.items()
                           if deadline <= now]
                for key, conn in overdue:
                    del self._armed[key]
                    self._cut(conn)

    def _cut(self, dbapi_connection: Any) -> None:
        """Shut the socket down under the blocked call (a duplicate of the descriptor, so
        the driver still owns and closes the original)."""
        if getattr(dbapi_connection, "closed", False):
            return  # closed meanwhile: nothing waits on it
        try:
            fd = dbapi_connection.fileno()
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError, ValueError) as exc:
            log.warning("jobs database: could not cut an overdue connection (%s)", exc)
            return
        self.cut += 1
        log.warning("jobs database: no answer within %.1f s; connection dropped",
                    self.timeout_s + GRACE_S)


def _ping(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
        cursor.fetchall()
    finally:
        cursor.close()


def install_deadlines(engine: Engine, timeout_s: float) -> StatementDeadlines:
    """Arm the watchdog around everything that waits for the server on ``engine``."""
    deadlines = StatementDeadlines(timeout_s)

    @event.listens_for(engine, "connect")
    def connected(_dbapi: Any, record: Any) -> None:
        record.info["fresh"] = True  # just connected: no need to ping it

    @event.listens_for(engine, "checkout")
    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        if record.info.pop("fresh", False):
            return
        deadlines.arm(dbapi)
        try:
            _ping(dbapi)
        except Exception as exc:
            # The pool drops this connection and opens a new one (bounded by connect_timeout).
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc
        finally:
            deadlines.disarm(dbapi)

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, *_: Any) -> None:
        with contextlib.suppress(Exception):
            deadlines.arm(conn.connection.dbapi_connection)

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, *_: Any) -> None:
        with contextlib.suppress(Exception):
            deadlines.disarm(conn.connection.dbapi_connection)

    @event.listens_for(engine, "handle_error")
    def failed(context: Any) -> None:
        conn = context.connection
        if conn is not None:
            with contextlib.suppress(Exception):
                deadlines.disarm(conn.connection.dbapi_connection)

    # A commit or rollback also waits for the server; the connection is disarmed when it
    # goes back to the pool (after the reset-on-return rollback, also armed).
    for name in ("commit", "rollback"):
        event.listen(engine, name, lambda conn, *_: _arm_quietly(deadlines, conn))

    @event.listens_for(engine.pool, "reset")
    def reset(dbapi: Any, *_: Any) -> None:
        deadlines.arm(dbapi)

    @event.listens_for(engine.pool, "checkin")
    def checkin(dbapi: Any, _record: Any) -> None:
        if dbapi is not None:
            deadlines.disarm(dbapi)

    # A dropped connection is never waited on again.
    for name in ("invalidate", "soft_invalidate", "close", "close_detached"):
        event.listen(engine.pool, name, lambda dbapi, *_: deadlines.disarm(dbapi))

    return deadlines


def _arm_quietly(deadlines: StatementDeadlines, conn: Any) -> None:
    with contextlib.suppress(Exception):
        deadlines.arm(conn.connection.dbapi_connection)
