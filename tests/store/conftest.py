"""Store fixtures: every test runs on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from storyloom.store.repository import StoryStore
from tests import postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the test server's maintenance database."""
    with postgres.postgres_server() as engine:
        yield engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        # A folder that does not exist yet: the store must create it.
        yield f"sqlite:///{tmp_path / 'var' / 'storyloom.db'}"
        return
    server: Engine = request.getfixturevalue("postgres_server")
    with postgres.fresh_database(server) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[StoryStore]:
    """A migrated store on the test's own database."""
    with StoryStore.open(store_url, migrate=True) as opened:
        yield opened
