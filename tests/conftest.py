"""Every test starts from a clean environment: no provider keys, its own storyloom home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports Prefect: its home (database, results) in a throwaway folder,
# never the developer's ~/.prefect, and no retry waits in tests (they are recorded).
_PREFECT_HOME = tempfile.mkdtemp(prefix="storyloom-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# Never the developer's own env file (~/.config/storyloom/env) or home.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="storyloom-config-")
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="storyloom-data-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["STORYLOOM_RETRY_WAIT_SCALE"] = "0"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

_SECRETS = (
    "GEMINI_API_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
    "SARVAM_API_KEY",
    "CLOUDINARY_URL",
    "CLOUDINARY_CLOUD_NAME",
    "CLOUDINARY_API_KEY",
    "CLOUDINARY_API_SECRET",
)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite story database at the newest schema, made once per test process: every
    test's home starts with a copy (`storyloom db upgrade` for each would cost minutes)."""
    from storyloom.store.repository import StoryStore

    path = tmp_path_factory.mktemp("migrated") / "storyloom.db"
    StoryStore.open(f"sqlite:///{path}", migrate=True).close()  # closing folds the WAL in
    return path


@pytest.fixture(autouse=True)
def clean_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated_database: Path
) -> Iterator[Path]:
    """No keys, every STORYLOOM_ knob at its default, home under tmp_path with its story
    database migrated (as after `storyloom db upgrade`)."""
    from storyloom import services

    for name in list(os.environ):
        if name in _SECRETS or (
            name.startswith("STORYLOOM_")
            and name not in ("STORYLOOM_RETRY_WAIT_SCALE", "STORYLOOM_TEST_POSTGRES_URL")
        ):
            monkeypatch.delenv(name)
    home = tmp_path / "storyloom"
    home.mkdir()
    shutil.copyfile(migrated_database, home / "storyloom.db")
    monkeypatch.setenv("STORYLOOM_HOME", str(home))
    # Book files (reader page, EPUB, PDF) are rendered at every publish; the tests of
    # other promises leave that out (it costs each run seconds): tests/flows/
    # test_book_files.py and the system tests turn it on.
    monkeypatch.setenv("STORYLOOM_EXPORTS", "[]")
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout's var/
    services.reset()
    yield home
    services.reset()


@pytest.fixture
def no_database(clean_env: Path) -> Path:
    """The home as a first run finds it: no folder, no story database."""
    shutil.rmtree(clean_env)
    return clean_env


@pytest.hookimpl(optionalhook=True)  # known only with pytest-xdist loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """How pytest-xdist (`-n auto --dist loadgroup`) shares the tests between workers:
    each module runs in one worker, so its module-scoped servers start once. The system
    tests that time real workers against latencies and limits (SYSTEM_TIMED) run in one
    worker, one after another, so two of their clusters never compete for the
    machine's two cores; the other system tests (the API, serve, the demo) form a
    second unit beside them. (A scheduler of our own: xdist 3.8's `xdist_group` marks
    do nothing under pytest 9, which no longer reads the node id xdist rewrites.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # Units go out in collection order (pytest_collection_modifyitems puts the longest,
    # the system tests, first), not by their number of tests.
    config.option.loadscopereorder = False

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The system tests first (they take the longest: the timed unit alone is about
    half the suite), so the other worker runs everything else beside them."""
    first = {"system": 0, "system-2": 1}
    items.sort(key=lambda item: first.get(_unit(item.nodeid), 2))  # stable


def _unit(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    if module.startswith("tests/system/"):
        return "system" if module.rsplit("/", 1)[1] in SYSTEM_TIMED else "system-2"
    return module


SYSTEM_TIMED = frozenset(
    {"test_production.py", "test_crash.py", "test_handback.py", "test_cancel.py"}
)
