"""`storyloom db`: the explicit migration step, and every other command refusing a schema
that is not the code's, in one line that names what to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from storyloom.cli import app
from storyloom.store import migrator
from storyloom.store.repository import StoryStore

runner = CliRunner()
OLDER = "0005"
NEWER = "9999"
HEAD = migrator.head_revision()

# Commands that use the story database, each refused before it does anything else.
USERS_OF_THE_STORE = [
    ["stories", "list"],
    ["tenants", "list"],
    ["api"],
    ["worker", "--pool", "story"],
]


def _url(home: Path) -> str:
    return f"sqlite:///{home / 'storyloom.db'}"


def _revision(home: Path) -> str | None:
    with StoryStore(_url(home)) as store:
        return migrator.current_revision(store.engine)


def _status() -> dict[str, object]:
    result = runner.invoke(app, ["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.fixture
def older(no_database: Path) -> Path:
    """A home whose story database was made by a storyloom one schema behind."""
    with StoryStore(_url(no_database)) as store:
        migrator.upgrade(store.engine, OLDER)
    return no_database


@pytest.fixture
def newer(clean_env: Path) -> Path:
    """A home whose story database a newer storyloom has migrated."""
    with StoryStore(_url(clean_env)) as store, store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
    return clean_env


@pytest.mark.parametrize("command", USERS_OF_THE_STORE, ids=" ".join)
def test_an_older_schema_is_refused_in_one_line(older: Path, command: list[str]) -> None:
    result = runner.invoke(app, command)

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: the database at {_url(older)} is at schema revision {OLDER}, this storyloom "
        f"needs {HEAD}: run `storyloom db upgrade`"
    ]
    assert _revision(older) == OLDER  # refused, not migrated


def test_a_never_migrated_database_is_refused(no_database: Path) -> None:
    result = runner.invoke(app, ["stories", "list"])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: the database at {_url(no_database)} has no schema yet, this storyloom "
        f"needs {HEAD}: run `storyloom db upgrade`"
    ]


def test_a_newer_schema_is_refused_and_upgrade_leaves_it(newer: Path) -> None:
    said = (
        f"error: the database at {_url(newer)} is at schema revision {NEWER}, newer than this "
        f"storyloom knows ({HEAD}): upgrade storyloom on this machine"
    )
    listed = runner.invoke(app, ["stories", "list"])
    assert listed.exit_code == 1
    assert listed.stderr.splitlines() == [said]

    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 1
    assert upgraded.stderr.splitlines() == [said]
    assert _revision(newer) == NEWER

    assert _status() == {
        "database": _url(newer), "current": NEWER, "head": HEAD, "state": "newer"
    }  # fmt: skip


def test_upgrade_brings_an_older_database_to_head_then_commands_run(older: Path) -> None:
    assert _status() == {
        "database": _url(older), "current": OLDER, "head": HEAD, "state": "behind"
    }  # fmt: skip

    upgraded = runner.invoke(app, ["db", "upgrade"])

    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.splitlines() == [
        f"database: {_url(older)}",
        f"before:   {OLDER}",
        f"after:    {HEAD}",
    ]
    assert _revision(older) == HEAD
    assert _status()["state"] == "up-to-date"
    assert runner.invoke(app, ["stories", "list"]).exit_code == 0

    again = runner.invoke(app, ["db", "upgrade"])  # once more: nothing to do
    assert again.exit_code == 0
    assert again.stdout.splitlines()[1:] == [f"before:   {HEAD}", f"after:    {HEAD}"]


def test_status_on_a_fresh_home_changes_nothing(no_database: Path) -> None:
    text_status = runner.invoke(app, ["db", "status"])

    assert text_status.exit_code == 0, text_status.output
    assert text_status.stdout.splitlines() == [
        f"database: {_url(no_database)}",
        "current:  none (no schema yet)",
        f"head:     {HEAD}",
        "state:    empty: run `storyloom db upgrade`",
    ]
    assert _status()["current"] is None
    assert not no_database.exists()  # no folder, no database made by looking


def test_an_unreachable_database_is_one_line_with_its_password_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "s3cret-pw"
    monkeypatch.setenv(
        "STORYLOOM_DATABASE_URL", f"postgresql://story:{password}@127.0.0.1:9/stories"
    )
    for command in (["db", "status"], ["db", "upgrade"]):
        result = runner.invoke(app, command)

        assert result.exit_code == 1, result.output
        assert password not in result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(
            "error: cannot use the database at postgresql://story:***@127.0.0.1:9/stories: "
        )


def test_the_installed_command_upgrades_a_fresh_home(no_database: Path) -> None:
    """The real entry point, in a process of its own, as `make demo` runs it."""
    storyloom = Path(sys.executable).parent / "storyloom"
    env = {**os.environ, "STORYLOOM_HOME": str(no_database), "COLUMNS": "300"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(storyloom), *args], env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    refused = run("stories", "list")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: the database at {_url(no_database)} has no schema yet, this storyloom "
        f"needs {HEAD}: run `storyloom db upgrade`"
    ]

    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines()[1:] == [
        "before:   none (no schema yet)",
        f"after:    {HEAD}",
    ]

    assert run("stories", "list").returncode == 0
