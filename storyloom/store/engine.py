"""How the store connects: a URL in, an engine tuned for SQLite or PostgreSQL out."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

# Execution option that marks an engine's transactions as read-only snapshots.
READ_ONLY = "storyloom_read_only"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | URL) -> URL:
    """The URL with PostgreSQL pointed at psycopg 3, whatever driver (if any) it named."""
    parsed = make_url(url)
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether this engine or connection talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_store_engine(url: str | URL) -> Engine:
    """An engine for the story database; SQLite gets WAL, a busy timeout and foreign keys."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        # Workers sit idle between runs long enough for a server or proxy to drop them.
        return create_engine(parsed, pool_pre_ping=True)
    return create_engine(parsed)


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names; None for other databases, memory and file: URIs."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


def reader(engine: Engine) -> Engine:
    """The same engine, but every transaction is one read-only snapshot of the database."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        # READ COMMITTED takes a new snapshot per statement: a book read in several
        # statements could straddle a publish. REPEATABLE READ keeps one snapshot.
        options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    return engine.execution_options(**options)


def _use_wal(cursor: Any) -> None:
    """Switch the database to WAL (readers never block the writer), once per file.

    SQLite does not call the busy handler for this switch: when several processes open a
    new database at once, the losers get "database is locked" at once. The mode sticks
    to the file, so they wait a little and find it done.
    """
    for attempt in range(50):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite's own transaction handling sends no BEGIN before a SELECT, so two
        # reads in one "transaction" could see two different databases; take it over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # The timeout first: switching a new database to WAL takes a lock too, and
            # another process may be doing the same (workers migrating at once).
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")  # cascades live in the schema
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            # A deferred transaction that reads and then writes fails at once with
            # SQLITE_BUSY if another writer got in between; IMMEDIATE waits its turn.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
