"""The PostgreSQL server the tests use: fresh databases on it, and a clear failure in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError

from storyloom.store.engine import normalize_url

POSTGRES_URL_ENV = "STORYLOOM_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_server() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the server's maintenance database; skips (fails in CI)
    when the server cannot be reached."""
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
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server: Engine, prefix: str = "storyloom_test") -> Iterator[str]:
    """A new empty database on the server, dropped afterwards; yields its psycopg URL."""
    name = f"{prefix}_{uuid4().hex[:16]}"
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
