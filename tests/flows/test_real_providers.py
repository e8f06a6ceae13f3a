"""The whole `story` flow on the real clients (google-genai, httpx, cloudinary) against
loopback fakes of Gemini, Sarvam and Cloudinary."""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows.story import story
from storyloom import services
from storyloom.models import CreativeStory, LifeStory
from tasks import policy
from tests.fakes.server import Fault
from tests.fakes.stack import CLOUDINARY_SECRET, GEMINI_KEY, SARVAM_KEY, Fakes

pytestmark = pytest.mark.flows


def test_story_on_real_clients(life_story: LifeStory, fakes: Fakes) -> None:
    result = story(story_id=life_story.id, pages=4, narration_languages=["hi-IN"])

    book = services.store().book(life_story.id)
    assert book is not None
    assert book.generation_id == result.generation_id
    assert len(book.pages) == 4
    assert all(250 * 0.85 <= p.words <= 250 * 1.15 for p in book.pages)

    # Gemini: one call a section (7 stages, sharing the 4 pages in groups), one proofread
    # a section (the fake writes to length: no rewrites), one illustration prompt a page,
    # four images.
    text_calls = [c for c in fakes.gemini.calls if ":generateContent" in c.path]
    image_model = services.providers().illustrator
    images = [c for c in text_calls if image_model.name.split(":")[-1] in c.path]
    assert len(images) == 4
    assert len(text_calls) - len(images) == 7 + 7 + 4
    assert all(c.headers["x-goog-api-key"] == "gemini-key" for c in fakes.gemini.calls)

    # Sarvam: English pages translated to Hindi page by page, then one TTS call per
    # chapter piece.
    translations = fakes.sarvam.calls_to("/translate")
    assert len(translations) == 4
    speech = fakes.sarvam.calls_to("/text-to-speech")
    chapters = book.chapters["hi-IN"]
    assert len(speech) >= len(chapters) >= 2
    assert chapters[0].text.startswith("[hi-IN]")  # the fake's "translation"
    assert sum(c.text.count("[hi-IN]") for c in chapters) == 4

    # Cloudinary: every image and chapter uploaded once, under the story's folders.
    # Each file is named by its page or chapter and its bytes' hash.
    assert sorted(fakes.cloudinary.public_ids("image")) == [
        i.public_id for i in book.illustrations
    ]
    assert [pid.rsplit("-", 1)[0] for pid in sorted(fakes.cloudinary.public_ids("image"))] == [
        f"stories/{life_story.id}/images/page-0{n}" for n in range(1, 5)
    ]
    assert [pid.rsplit("-", 1)[0] for pid in sorted(fakes.cloudinary.public_ids("video"))] == [
        f"stories/{life_story.id}/audio/hi-IN/chapter-{n:02d}"
        for n in range(1, len(chapters) + 1)
    ]
    uploads = fakes.cloudinary.calls_to("/upload")
    assert len(uploads) == 4 + len(chapters)
    assert book.banner_url is not None
    assert "f_auto,q_auto" in book.banner_url

    # Cost: calls and tokens per provider, recorded on the story.
    usage = {u.provider: u for u in book.usage}
    assert usage["gemini-text"].calls == 18
    assert usage["gemini-text"].input_tokens > 0
    assert usage["gemini-text"].output_tokens > 0
    assert usage["gemini-image"].calls == 4
    assert usage["sarvam-translate"].calls == 4
    assert usage["sarvam-tts"].calls == len(speech)
    assert usage["sarvam-tts"].characters >= sum(len(c.text) for c in chapters) * 0.9


def test_every_story_completes_with_20_percent_of_calls_failing(
    life_story: LifeStory, creative_story: CreativeStory, fakes: Fakes
) -> None:
    for fake in (fakes.gemini, fakes.sarvam, fakes.cloudinary):
        fake.fail_every = 5  # every fifth call: 503 with Retry-After
    policy.requested_waits.clear()

    for tale, languages in ((life_story, ["hi-IN"]), (creative_story, ["en-IN", "ta-IN"])):
        result = story(story_id=tale.id, pages=4, narration_languages=languages)

        book = services.store().book(tale.id)
        assert book is not None
        assert book.generation_id == result.generation_id
        assert len(book.pages) == 4
        assert len(book.illustrations) == 4
        assert set(book.chapters) == set(languages)
    for fake in (fakes.gemini, fakes.sarvam, fakes.cloudinary):
        assert any(c.status == 503 for c in fake.calls), fake
    # Each 503 said Retry-After: 0.01 s, and each was waited out before the retry.
    failures = sum(c.status == 503 for f in (fakes.gemini, fakes.sarvam) for c in f.calls)
    assert len(policy.requested_waits) >= failures


def everything_recorded(flow_run_id: UUID) -> str:
    """All that Prefect keeps of a run and its subflows: logs, states, artifacts."""

    async def read() -> str:
        async with get_client() as client:
            runs = [await client.read_flow_run(flow_run_id)]
            runs += await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
            ids = [run.id for run in runs]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            )
        return "\n".join(
            [log.message for log in logs]
            + [f"{run.parameters} {run.state.message if run.state else ''}" for run in runs]
            + [str(artifact.data) for artifact in artifacts]
        )

    return asyncio.run(read())


def test_no_secret_is_recorded_anywhere(life_story: LifeStory, fakes: Fakes) -> None:
    state = story(
        story_id=life_story.id, pages=4, image_count=1, narration_languages=["hi-IN"],
        return_state=True,
    )  # fmt: skip
    run_id = state.state_details.flow_run_id
    assert run_id is not None

    recorded = everything_recorded(run_id)
    assert "page-01" in recorded  # the record is there, and is what is searched
    for secret in (GEMINI_KEY, SARVAM_KEY, CLOUDINARY_SECRET):
        assert secret not in recorded
    book = services.store().book(life_story.id)
    assert book is not None
    for secret in (GEMINI_KEY, SARVAM_KEY, CLOUDINARY_SECRET):
        assert secret not in book.model_dump_json()


@pytest.mark.parametrize(
    ("variable", "value", "provider"),
    [
        ("GEMINI_API_KEY", "wrong-key-7f3a", "Gemini"),
        ("SARVAM_API_KEY", "wrong-key-7f3a", "Sarvam"),
    ],
)
def test_a_bad_key_fails_fast_naming_the_provider(
    life_story: LifeStory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, provider: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(variable, value)
    services.reset()

    state = story(
        story_id=life_story.id, pages=4, images=False, narration_languages=["hi-IN"],
        return_state=True,
    )  # fmt: skip
    with pytest.raises(Exception, match=provider) as failure:
        state.result()

    assert value not in str(failure.value)
    assert state.state_details.flow_run_id is not None
    assert value not in everything_recorded(state.state_details.flow_run_id)
    fake = fakes.gemini if provider == "Gemini" else fakes.sarvam
    refused = [c for c in fake.calls if c.status in (400, 401, 403)]
    assert len(refused) == 1  # one call, no retries of a permanent error
    assert services.store().book(life_story.id) is None
    latest = services.store().latest_generation(life_story.id)
    assert latest is not None
    assert latest.status == "failed"
    assert provider in (latest.error or "")
    assert value not in (latest.error or "")


def test_a_safety_block_fails_the_image_not_the_book(life_story: LifeStory, fakes: Fakes) -> None:
    fakes.gemini.finish_next_image("IMAGE_SAFETY")

    result = story(story_id=life_story.id, pages=4, narration_languages=[])

    assert result.illustrations is not None
    assert len(result.illustrations.failed_pages) == 1
    book = services.store().book(life_story.id)
    assert book is not None
    assert len(book.illustrations) == 3
    assert book.illustrations[0].position == 1


def test_retry_after_is_waited_out(life_story: LifeStory, fakes: Fakes) -> None:
    fakes.sarvam.schedule(Fault(429, retry_after=7, path_contains="/translate"))
    policy.requested_waits.clear()

    story(story_id=life_story.id, pages=4, images=False, narration_languages=["hi-IN"])

    assert 7.0 in policy.requested_waits
    assert [c.status for c in fakes.sarvam.calls_to("/translate")].count(429) == 1


def test_a_bad_cloudinary_secret_fails_fast(
    life_story: LifeStory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert services.media().name == "cloudinary"
    good = os.environ["CLOUDINARY_URL"]
    monkeypatch.setenv("CLOUDINARY_URL", good.replace(":s3cret@", ":not-the-secret@"))
    services.reset()

    with pytest.raises(Exception, match="Cloudinary") as failure:
        story(story_id=life_story.id, pages=4, narration_languages=[])

    assert "not-the-secret" not in str(failure.value)
    refused = [c for c in fakes.cloudinary.calls_to("/upload") if c.status == 401]
    assert len(refused) == 1
    assert services.store().book(life_story.id) is None


def test_chapters_follow_the_measured_voice_not_the_estimate(
    life_story: LifeStory, fakes: Fakes
) -> None:
    estimate = services.providers().speaker.seconds_per_char("en-IN")
    fakes.sarvam.seconds_per_char = estimate * 1.6  # a voice far slower than planned for

    story(story_id=life_story.id, pages=4, images=False, narration_languages=["en-IN"])

    book = services.store().book(life_story.id)
    assert book is not None
    chapters = book.chapters["en-IN"]
    durations = [c.duration_seconds for c in chapters]
    # Planned at the estimate, chapters would run about 96 s; measured, about a minute:
    # each page (a section start here) shared evenly by its chapters, none a short tail.
    # (The fake reads each sentence at its own pace, 0.8 to 1.2 times the voice's, as a
    # real voice does: chapters vary around the minute.)
    assert max(durations) <= 75
    assert min(durations) >= 35, durations
    speech = fakes.sarvam.calls_to("/text-to-speech")
    assert len(speech) <= len(chapters) + 1  # the first chapter spoken twice at most
