"""The schema rule: a process runs only on the revision its code was written for.

Migrating is a step of its own (`storyloom db upgrade`), never a side effect of opening
the store: in a rolling upgrade the first new worker would otherwise change the schema
under the old ones. A database behind (or never migrated) asks for that step; one ahead
says this machine's storyloom is the old one.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

SchemaState = Literal["up-to-date", "behind", "empty", "newer"]

UPGRADE_COMMAND = "storyloom db upgrade"

# What to do about a database that is not up to date.
ADVICE: dict[SchemaState, str] = {
    "behind": f"run `{UPGRADE_COMMAND}`",
    "empty": f"run `{UPGRADE_COMMAND}`",
    "newer": "upgrade storyloom on this machine",
}


def schema_state(current: str | None, head: str, known: Collection[str]) -> SchemaState:
    """Where a database at revision `current` (None: never migrated) stands against the
    code's head; a revision the code does not know was written by newer code."""
    if current == head:
        return "up-to-date"
    if current is None:
        return "empty"
    return "behind" if current in known else "newer"


class SchemaMismatchError(Exception):
    """The story database's schema is not the revision this code needs; the message says
    what to run."""

    def __init__(self, database: str, current: str | None, head: str, state: SchemaState) -> None:
        self.database = database  # the URL, password hidden
        self.current = current
        self.head = head
        self.state = state
        super().__init__(_explain(database, current, head, state))


def _explain(database: str, current: str | None, head: str, state: SchemaState) -> str:
    where = f"the database at {database}"
    if state == "newer":
        return (
            f"{where} is at schema revision {current}, newer than this storyloom knows "
            f"({head}): {ADVICE[state]}"
        )
    found = "has no schema yet" if current is None else f"is at schema revision {current}"
    return f"{where} {found}, this storyloom needs {head}: {ADVICE[state]}"


def require_head(database: str, current: str | None, head: str, known: Collection[str]) -> None:
    """Raise SchemaMismatchError unless the database is at the code's head revision."""
    state = schema_state(current, head, known)
    if state != "up-to-date":
        raise SchemaMismatchError(database, current, head, state)
