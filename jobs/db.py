"""SQLAlchemy engine and sessions for the job records.

SQLite by default (one file under ``Settings.data_dir``), PostgreSQL in production
(``postgresql+psycopg://...``). The API and every worker are separate processes sharing the
same database, so SQLite runs in WAL mode (readers never block the writer) with a busy
timeout (a writer waits for the lock instead of failing with "database is locked").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from jobs import keys as _keys  # noqa: F401  (registers the api_keys tables on Base)
from jobs import sweeps as _sweeps  # noqa: F401  (registers the sweeps table on Base)
from jobs.records import Base

if TYPE_CHECKING:
    from core.settings import Settings

SQLITE_BUSY_TIMEOUT_S = 30.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    # WAL + NORMAL is durable across process crashes (only an OS crash may lose the tail).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a worker may sit idle for hours between jobs and its pooled connections
    # outlive a PostgreSQL restart.
    return create_engine(url, pool_pre_ping=True)


class Database:
    """One engine and its session factory; create one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.jobs_database_url)

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
