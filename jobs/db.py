"""SQLAlchemy engine and sessions for the job records.

SQLite by default (one file under ``Settings.data_dir``), PostgreSQL in production
(``postgresql+psycopg://...``). The API and every worker are separate processes sharing the
same database, so SQLite runs in WAL mode (readers never block the writer) with a busy
timeout (a writer waits for the lock instead of failing with "database is locked"), the
setting ``database_statement_timeout_s``. On PostgreSQL every wait for the server is bounded
(jobs/db_timeouts.py): connecting, each statement, and the wait for a pooled connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from jobs import keys as _keys  # noqa: F401  (registers the api_keys tables on Base)
from jobs import sweeps as _sweeps  # noqa: F401  (registers the sweeps table on Base)
from jobs.db_timeouts import StatementDeadlines, install_deadlines, postgres_connect_args
from jobs.records import Base

if TYPE_CHECKING:
    from core.settings import Settings


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long any wait for the jobs database may last (settings ``database_*_s``)."""

    connect_s: float = 3.0
    statement_s: float = 5.0
    pool_s: float = 5.0
    sqlite_busy_s: float = 30.0  # a local file: only other writers make one wait

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseTimeouts:
        return cls(settings.database_connect_timeout_s, settings.database_statement_timeout_s,
                   settings.database_pool_timeout_s, settings.database_busy_timeout_s)


def _sqlite_pragmas(busy_timeout_s: float) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        # WAL + NORMAL is durable across process crashes (only an OS crash may lose the tail).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return apply


def make_engine(url: str, timeouts: DatabaseTimeouts | None = None
                ) -> tuple[Engine, StatementDeadlines | None]:
    """The engine, and on PostgreSQL the watchdog that bounds its statements."""
    timeouts = timeouts or DatabaseTimeouts()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": timeouts.sqlite_busy_s, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas(timeouts.sqlite_busy_s))
        return engine, None
    if parsed.get_backend_name() != "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_timeout=timeouts.pool_s), None
    # Pooled connections are pinged on checkout under the statement deadline (a worker may
    # sit idle for hours and its connections outlive a PostgreSQL restart).
    engine = create_engine(
        url, connect_args=postgres_connect_args(timeouts.connect_s, timeouts.statement_s),
        pool_timeout=timeouts.pool_s)
    return engine, install_deadlines(engine, timeouts.statement_s)


class Database:
    """One engine and its session factory; create one per process."""

    def __init__(self, url: str, timeouts: DatabaseTimeouts | None = None) -> None:
        self.url = url
        self.engine, self.deadlines = make_engine(url, timeouts)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.jobs_database_url, DatabaseTimeouts.from_settings(settings))

    def create_schema(self) -> None:
        """Create missing tables, then add missing nullable columns (idempotent).

        The API and the workers all call it at start; when two race on PostgreSQL the loser
        sees a duplicate-object error, and a second pass finds the tables there. Columns
        added since a database was created are all nullable, so ``ADD COLUMN`` is the whole
        migration (there are no others yet).
        """
        for attempt in range(2):
            try:
                Base.metadata.create_all(self.engine)
                self._add_missing_columns()
                return
            except DBAPIError:
                if attempt:
                    raise

    def _add_missing_columns(self) -> None:
        inspector = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable:
                    raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name}")
                kind = column.type.compile(dialect=self.engine.dialect)
                with self.engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN'
                                      f' "{column.name}" {kind}'))

    def dispose(self) -> None:
        self.engine.dispose()
