"""Every test starts from a clean environment: no provider keys, its own storyloom home."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Prefect: its home (database, results) in a throwaway folder,
# never the developer's ~/.prefect, and no retry waits in tests (they are recorded).
_PREFECT_HOME = tempfile.mkdtemp(prefix="storyloom-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
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


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No keys, every STORYLOOM_ knob at its default, home under tmp_path."""
    from storyloom import services

    for name in list(os.environ):
        if name in _SECRETS or (
            name.startswith("STORYLOOM_")
            and name not in ("STORYLOOM_RETRY_WAIT_SCALE", "STORYLOOM_TEST_POSTGRES_URL")
        ):
            monkeypatch.delenv(name)
    home = tmp_path / "storyloom"
    monkeypatch.setenv("STORYLOOM_HOME", str(home))
    # Book files (reader page, EPUB, PDF) are rendered at every publish; the tests of
    # other promises leave that out (it costs each run seconds): tests/flows/
    # test_book_files.py and the system tests turn it on.
    monkeypatch.setenv("STORYLOOM_EXPORTS", "[]")
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout's var/
    services.reset()
    yield home
    services.reset()


def pytest_configure(config: pytest.Config) -> None:
    # Declared here too, so a run without xdist (`-p no:xdist`) accepts the groups.
    config.addinivalue_line("markers", "xdist_group(name): run the group in one xdist worker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (`--dist loadgroup`): each module runs in one worker, so
    its module-scoped servers start once; the system tests, which time real workers
    against latencies, all run in one worker, one after another, so two clusters never
    compete for the machine's two cores."""
    for item in items:
        module = item.nodeid.split("::")[0]
        group = "system" if module.startswith("tests/system/") else module
        item.add_marker(pytest.mark.xdist_group(group))
