"""Store fixtures: every test runs on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError

from storyloom.store.engine import normalize_url
from storyloom.store.repository import StoryStore

POSTGRES_URL_ENV = "STORYLOOM_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the test server's maintenance database."""
    url = normalize_url(os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        reason = (
            f"PostgreSQL at {url.render_as_string(hide_password=True)} cannot be reached "
            f"(set {POSTGRES_URL_ENV}): {exc.orig}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        # A folder that does not exist yet: the store must create it.
        yield f"sqlite:///{tmp_path / 'var' / 'storyloom.db'}"
        return
    server: Engine = request.getfixturevalue("postgres_server")
    name = f"storyloom_test_{uuid4().hex[:16]}"
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(store_url: str) -> Iterator[StoryStore]:
    """A migrated store on the test's own database."""
    with StoryStore.open(store_url) as opened:
        yield opened
