"""Alembic environment: runs on the connection StoryStore.migrate hands in, never alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storyloom.store.tables import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("storyloom migrations run online only: use StoryStore.migrate()")

_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("no connection handed in: run migrations through StoryStore.migrate()")
_run(_connection)
