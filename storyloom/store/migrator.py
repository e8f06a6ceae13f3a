"""Schema migrations: alembic, run in code against the store's own engine (no alembic.ini)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

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


def head_revision() -> str:
    """The newest revision the code knows."""
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None  # there is always the initial revision
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it has never been migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to revision, one process at a time."""
    with _migrating(engine) as connection:
        command.upgrade(alembic_config(connection), revision)


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
