"""One Prefect test server for the whole session (it takes seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from storyloom import services
from storyloom.models import CreativeStory, LifeStory, parse_story
from tests.fakes.stack import Fakes, running_fakes

SAMPLES = Path(__file__).parents[2] / "storyloom" / "samples"


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def life_story() -> LifeStory:
    tale = parse_story((SAMPLES / "life-story.json").read_bytes())
    assert isinstance(tale, LifeStory)
    services.store().add_story(tale)
    return tale


@pytest.fixture
def creative_story() -> CreativeStory:
    tale = parse_story((SAMPLES / "creative-story.json").read_bytes())
    assert isinstance(tale, CreativeStory)
    services.store().add_story(tale)
    return tale


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    """Gemini, Sarvam and Cloudinary fakes, with storyloom's real clients pointed at them."""
    with (
        running_fakes() as running,
        # Every test pays again: nothing comes from an earlier test's cache.
        temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True}),
    ):
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        services.reset()
        yield running
