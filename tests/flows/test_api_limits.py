"""The second layer of limits: every call to an external API takes a slot of that API's
Prefect global concurrency limits. The whole `story` flow runs on the real clients
against the loopback fakes (slow enough that calls overlap), on the harness's server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from deployments.config import ApiLimit, api_limit_sizes
from deployments.limits import ensure_api_limit
from flows.story import story
from storyloom import services
from storyloom.limits import (
    APIS,
    CLOUDINARY,
    GEMINI_IMAGE,
    GEMINI_TEXT,
    SARVAM,
    api_for,
    in_flight_limit,
    rate_limit_name,
)
from storyloom.models import LifeStory
from storyloom.providers.offline import (
    OfflineIllustrator,
    OfflineSpeaker,
    OfflineTranslator,
    OfflineWriter,
)
from storyloom.settings import Settings, get_settings
from tasks import pacing
from tasks.policy import ApiLimitMissing
from tests.fakes.server import Call
from tests.fakes.stack import Fakes, peak_in_flight

pytestmark = pytest.mark.flows

# Small enough that the story's parallel calls overrun them when nothing holds them back.
IN_FLIGHT = {GEMINI_TEXT: 3, GEMINI_IMAGE: 1, SARVAM: 1, CLOUDINARY: 1}
# One rate that binds: Gemini text, four calls a second out of a bucket of two. The
# others get a slot back every 20 ms, so only their in-flight caps bind.
TEXT_RATE = ApiLimit(2, 4.0)
GENEROUS_RATE = 50.0
LATENCY = 0.2  # long enough that calls started together overlap on a busy machine


def calls_to(fakes: Fakes, api: str) -> list[Call]:
    """The calls one API received (Gemini text and image share one fake)."""
    if api in (GEMINI_TEXT, GEMINI_IMAGE):
        settings = get_settings()
        model = settings.gemini_text_model if api == GEMINI_TEXT else settings.gemini_image_model
        return fakes.gemini_calls(model)
    return list((fakes.sarvam if api == SARVAM else fakes.cloudinary).calls)


@pytest.fixture
def fakes(fakes: Fakes) -> Fakes:
    """The fakes of conftest, slow enough that calls overlap."""
    for state in fakes.all:
        state.latency = LATENCY
    return fakes


@pytest.fixture
def limits_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_API_LIMITS", "true")
    services.reset()


def make_limits(sizes: dict[str, ApiLimit]) -> None:
    """Create (or resize) limits on the harness's server the way `storyloom setup` does."""
    with get_client(sync_client=True) as client:
        for name, size in sizes.items():
            ensure_api_limit(client, name, size, dry_run=False)
    pacing.reset()  # the sizes this process read are no longer the server's


def drop_limits(names: Iterable[str]) -> None:
    with get_client(sync_client=True) as client:
        for name in names:
            with contextlib.suppress(ObjectNotFound):
                client.delete_global_concurrency_limit_by_name(name)


ALL_LIMITS = [name for api in APIS for name in (in_flight_limit(api), rate_limit_name(api))]


@pytest.fixture
def small_limits() -> Iterator[None]:
    make_limits(
        {in_flight_limit(api): ApiLimit(n, 0.0) for api, n in IN_FLIGHT.items()}
        | {rate_limit_name(api): ApiLimit(n, GENEROUS_RATE) for api, n in IN_FLIGHT.items()}
        | {rate_limit_name(GEMINI_TEXT): TEXT_RATE}
    )
    yield
    drop_limits(ALL_LIMITS)  # the harness's server outlives this module


def most_started_too_soon(starts: list[float], bucket: ApiLimit) -> float:
    """How far call starts overrun a token bucket (`limit` deep, refilled at
    `slot_decay_per_second`): the most calls that started in any window beyond what the
    bucket allows in it, with 50 ms of slack for the network. 0 or less: within."""
    starts = sorted(starts)
    return max(
        (j - i + 1) - (bucket.limit + bucket.slot_decay_per_second * (starts[j] - starts[i] + 0.05))
        for i in range(len(starts))
        for j in range(i, len(starts))
    )


def run_a_story(tale: LifeStory) -> None:
    """A small book that still calls every API side by side: seven sections at once,
    two images after the first, three translations, chapters and uploads in parallel."""
    story(
        story_id=tale.id, pages=3, words_per_page=100, improve_grammar=False, image_count=3,
        narration_languages=["hi-IN"],
    )  # fmt: skip
    book = services.store().book(tale.id)
    assert book is not None
    assert len(book.illustrations) == 3
    assert book.chapters["hi-IN"]


# --- which provider calls which API -------------------------------------------------


@pytest.mark.usefixtures("fakes")
def test_each_real_provider_is_mapped_to_its_api() -> None:
    # The real providers as the settings build them: their names are what tasks map.
    providers, media = services.providers(), services.media()
    assert api_for("text", providers.writer.name) == GEMINI_TEXT
    assert api_for("image", providers.illustrator.name) == GEMINI_IMAGE
    assert api_for("speech", providers.speaker.name) == SARVAM
    assert api_for("translation", providers.translator.name) == SARVAM
    assert api_for("media", media.name) == CLOUDINARY


def test_offline_providers_and_local_files_use_no_api() -> None:
    assert api_for("text", OfflineWriter.name) is None
    assert api_for("image", OfflineIllustrator.name) is None
    assert api_for("speech", OfflineSpeaker.name) is None
    assert api_for("translation", OfflineTranslator.name) is None
    assert api_for("media", services.media().name) is None  # local files: no keys set


def test_setup_makes_the_names_the_tasks_take() -> None:
    assert set(api_limit_sizes(Settings())) == set(ALL_LIMITS)


# --- calls in flight, and their rate ----------------------------------------------------


@pytest.mark.usefixtures("small_limits", "limits_on")
def test_calls_keep_to_their_api_limits(life_story: LifeStory, fakes: Fakes) -> None:
    run_a_story(life_story)

    seen = {api: peak_in_flight(calls_to(fakes, api)) for api in APIS}
    assert all(seen[api] <= IN_FLIGHT[api] for api in APIS), seen
    assert fakes.sarvam.max_in_flight <= IN_FLIGHT[SARVAM]
    assert fakes.cloudinary.max_in_flight <= IN_FLIGHT[CLOUDINARY]
    text_starts = [c.started for c in calls_to(fakes, GEMINI_TEXT)]
    assert most_started_too_soon(text_starts, TEXT_RATE) <= 0, text_starts
    # Every slot held for a call was given back when it ended.
    with get_client(sync_client=True) as client:
        for api in APIS:
            gcl = client.read_global_concurrency_limit_by_name(in_flight_limit(api))
            assert gcl.active_slots == 0, api


@pytest.mark.usefixtures("small_limits")
def test_without_api_limits_the_same_run_overruns_them(life_story: LifeStory, fakes: Fakes) -> None:
    # STORYLOOM_API_LIMITS unset: the limits exist but nothing takes their slots.
    run_a_story(life_story)

    seen = {api: peak_in_flight(calls_to(fakes, api)) for api in APIS}
    assert all(seen[api] > IN_FLIGHT[api] for api in APIS), seen
    text_starts = [c.started for c in calls_to(fakes, GEMINI_TEXT)]
    assert most_started_too_soon(text_starts, TEXT_RATE) > 1, text_starts  # 7 sections at once


# --- limits on, but not made ------------------------------------------------------------


@pytest.mark.usefixtures("limits_on")
@pytest.mark.parametrize("missing", [rate_limit_name(GEMINI_TEXT), in_flight_limit(GEMINI_TEXT)])
def test_a_missing_limit_fails_the_run_saying_to_run_setup(
    life_story: LifeStory, fakes: Fakes, missing: str
) -> None:
    make_limits(
        {name: ApiLimit(8, 0.0 if name.startswith("api:") else 10.0) for name in ALL_LIMITS}
    )
    drop_limits([missing])
    try:
        with pytest.raises(ApiLimitMissing) as failure:
            story(story_id=life_story.id, pages=4, narration_languages=["hi-IN"])
    finally:
        drop_limits(ALL_LIMITS)

    message = str(failure.value)
    assert repr(missing) in message
    assert "`storyloom setup`" in message
    assert "STORYLOOM_API_LIMITS" in message
    # Nothing went out unthrottled, and the run stopped at its first call (a section).
    assert fakes.gemini.calls == []
    assert services.store().book(life_story.id) is None
    latest = services.store().latest_generation(life_story.id)
    assert latest is not None
    assert latest.status == "failed"


@pytest.mark.usefixtures("limits_on")
def test_offline_providers_need_no_limits(life_story: LifeStory) -> None:
    # No keys: every role offline, local files. Nothing is limited, nothing is missing.
    drop_limits(ALL_LIMITS)
    story(story_id=life_story.id, pages=4, improve_grammar=False, narration_languages=[])
    assert services.store().book(life_story.id) is not None
