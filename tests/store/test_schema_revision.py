"""A store opens only on the schema revision its code needs; migrating is a step of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect, text

from storyloom import services
from storyloom.store import migrator
from storyloom.store.engine import reader
from storyloom.store.repository import StoryStore
from storyloom.store.schema import SchemaMismatchError, schema_state

OLDER = "0005"
NEWER = "9999"  # a revision this code does not know: written by a newer storyloom


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _refusal(url: str) -> SchemaMismatchError:
    with pytest.raises(SchemaMismatchError) as refused:
        StoryStore.open(url)
    return refused.value


def test_schema_state_against_the_head() -> None:
    known = {"0001", "0002"}
    assert schema_state("0002", "0002", known) == "up-to-date"
    assert schema_state("0001", "0002", known) == "behind"
    assert schema_state(None, "0002", known) == "empty"
    assert schema_state("0003", "0002", known) == "newer"


def test_a_store_at_head_opens(store_url: str) -> None:
    with StoryStore.open(store_url, migrate=True):
        pass
    with StoryStore.open(store_url) as store:
        assert store.list_stories() == []


def test_a_never_migrated_database_is_refused_and_left_empty(store_url: str) -> None:
    refused = _refusal(store_url)

    head = migrator.head_revision()
    assert (refused.state, refused.current, refused.head) == ("empty", None, head)
    assert str(refused) == (
        f"the database at {refused.database} has no schema yet, this storyloom needs "
        f"{head}: run `storyloom db upgrade`"
    )
    with StoryStore(store_url) as store:
        assert _tables(store.engine) == set()


def test_an_older_schema_is_refused_and_left_as_it_was(store_url: str) -> None:
    with StoryStore(store_url) as store:
        migrator.upgrade(store.engine, OLDER)
        tables = _tables(store.engine)

    refused = _refusal(store_url)

    head = migrator.head_revision()
    assert refused.state == "behind"
    assert str(refused) == (
        f"the database at {refused.database} is at schema revision {OLDER}, this storyloom "
        f"needs {head}: run `storyloom db upgrade`"
    )
    with StoryStore(store_url) as store:
        assert refused.database == store.url  # its password hidden
        assert migrator.current_revision(store.engine) == OLDER
        assert _tables(store.engine) == tables
        assert store.migrate() == OLDER  # the explicit step brings it to head
        assert migrator.current_revision(store.engine) == head
    with StoryStore.open(store_url) as store:
        assert store.list_stories() == []


def test_a_newer_schema_is_refused_and_not_migrated(store_url: str) -> None:
    with StoryStore.open(store_url, migrate=True) as store, store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})

    refused = _refusal(store_url)

    head = migrator.head_revision()
    assert refused.state == "newer"
    assert str(refused) == (
        f"the database at {refused.database} is at schema revision {NEWER}, newer than this "
        f"storyloom knows ({head}): upgrade storyloom on this machine"
    )
    with StoryStore(store_url) as store:
        with pytest.raises(SchemaMismatchError, match="upgrade storyloom on this machine"):
            store.migrate()  # alembic cannot go down from a revision it does not know
        assert migrator.current_revision(store.engine) == NEWER


def test_the_check_is_one_query(store_url: str) -> None:
    with StoryStore.open(store_url, migrate=True) as store:
        statements: list[str] = []

        @event.listens_for(store.engine, "before_cursor_execute")
        def record(*args: object) -> None:
            statements.append(str(args[2]))

        migrator.require_head(reader(store.engine))

    queries = [s for s in statements if s.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert queries == ["SELECT version_num FROM alembic_version"]


def test_flow_runs_get_the_store_only_at_head(no_database: Path) -> None:
    """services.store() is what every flow run and the API use."""
    url = f"sqlite:///{no_database / 'storyloom.db'}"
    with StoryStore(url) as store:
        migrator.upgrade(store.engine, OLDER)

    with pytest.raises(SchemaMismatchError, match=r"run `storyloom db upgrade`"):
        services.store()

    with StoryStore(url) as store:
        store.migrate()
    assert services.store().list_stories() == []
