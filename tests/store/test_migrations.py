"""The migrations build exactly the schema tables.py declares, and can be undone and redone."""

from __future__ import annotations

import threading
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from storyloom.models import CreativeStory
from storyloom.store import migrator
from storyloom.store.repository import StoryStore
from storyloom.store.tables import Base


def _schema_diffs(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _story() -> CreativeStory:
    return CreativeStory(
        id="river", kind="creative", title="River", language="en-IN", premise="A river talks."
    )


def test_upgrade_builds_exactly_the_declared_schema(store_url: str) -> None:
    with StoryStore(store_url) as store:
        assert migrator.current_revision(store.engine) is None
        store.migrate()
        assert migrator.current_revision(store.engine) == migrator.head_revision()
        assert _schema_diffs(store.engine) == []
        assert _tables(store.engine) == {*Base.metadata.tables, "alembic_version"}


def test_downgrade_to_base_and_upgrade_again(store_url: str) -> None:
    with StoryStore.open(store_url, migrate=True) as store:
        store.add_story(_story())

        migrator.downgrade(store.engine, "base")
        assert _tables(store.engine) <= {"alembic_version"}
        assert migrator.current_revision(store.engine) is None
        assert _schema_diffs(store.engine) != []  # the comparison does see a missing schema

        store.migrate()
        assert _schema_diffs(store.engine) == []
        store.add_story(_story())  # the data went with the tables; the schema works again
        assert store.get_story("river") == _story()


def test_migrating_an_up_to_date_database_changes_nothing(store_url: str) -> None:
    with StoryStore.open(store_url, migrate=True) as store:
        store.add_story(_story())
        store.migrate()
        assert migrator.current_revision(store.engine) == migrator.head_revision()
        assert store.get_story("river") == _story()


def test_workers_migrating_at_once_all_succeed(store_url: str) -> None:
    workers = 4
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def migrate() -> None:
        with StoryStore(store_url) as store:
            barrier.wait()
            try:
                store.migrate()
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with StoryStore(store_url) as store:
        assert migrator.current_revision(store.engine) == migrator.head_revision()
        assert _schema_diffs(store.engine) == []
