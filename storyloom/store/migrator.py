"""Schema migrations: alembic, run in code against the store's own engine (no alembic.ini)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from storyloom.store import schema

MIGRATIONS = Path(__file__).parent / "migrations"

# Any fixed bigint will do: every storyloom process must agree on it, nothing else uses it.
MIGRATION_LOCK_KEY = 0x73746F72796C6F6F  # b"storyloo"


def alembic_config(connection: Connection) -> Config:
    """An alembic config for our migrations that runs on the given connection."""
    config = Config()
    # configparser would read a % in the path as interpolation.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    # Read once a process: every store opened checks its revision against it.
    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    """The newest revision the code knows."""
    head = _script().get_current_head()
    assert head is not None  # there is always the initial revision
    return head


def known_revisions() -> frozenset[str]:
    """Every revision the code knows."""
    return frozenset(script.revision for script in _script().walk_revisions())


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, in one query; None when it has never been
    migrated (no alembic_version table, or an empty one)."""
    with engine.connect() as connection:
        try:
            found = connection.execute(text("SELECT version_num FROM alembic_version"))
            revisions = sorted(found.scalars())
        except DBAPIError:
            # Only now look whether the table is missing (a second query, on the path
            # that refuses anyway); any other failure is the caller's to see.
            connection.rollback()
            if inspect(connection).has_table("alembic_version"):
                raise
            return None
    # Our history is one line: several rows (branches) were written by other code,
    # and the joined ids are a revision this code does not know.
    return "+".join(revisions) or None


def require_head(engine: Engine) -> None:
    """Refuse (schema.SchemaMismatchError, naming what to run) a database whose schema is
    not the code's head revision: older, never migrated, or newer. One query."""
    current = current_revision(engine)
    schema.require_head(_shown(engine), current, head_revision(), known_revisions())


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the database to revision, one process at a time; the revision it was at
    before. A database newer than the code is refused (SchemaMismatchError), not touched."""
    with _migrating(engine) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        head = head_revision()
        state = schema.schema_state(before, head, known_revisions())
        if state == "newer":
            raise schema.SchemaMismatchError(_shown(engine), before, head, state)
        command.upgrade(alembic_config(connection), revision)
    return before


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the database to revision ("base" drops everything)."""
    with _migrating(engine) as connection:
        command.downgrade(alembic_config(connection), revision)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    # One transaction for the whole run: PostgreSQL's DDL is transactional, so a failed
    # migration leaves nothing half done. Two workers starting at once queue on the
    # advisory lock, and the second finds the schema at head and does nothing.
    # On SQLite the engine's BEGIN IMMEDIATE gives the same queueing.
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        yield connection


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
