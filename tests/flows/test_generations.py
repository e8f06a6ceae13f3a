"""A generation is a self-contained version of the book: a failed regeneration leaves every
published byte and URL as it was and deletes what it uploaded; two runs on one story never
lose either's output silently; changing what shapes a paid call pays again for exactly
that, and a cache hit costs nothing."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

from flows.narration import narration
from flows.story import story
from storyloom import prompts, services
from storyloom.models import LifeStory, Usage
from storyloom.store.repository import GenerationConflictError
from tests.fakes.server import Call, Fault
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

BOOK: dict[str, Any] = {"pages": 4, "narration_languages": ["en-IN"]}


def published(fakes: Fakes, story_id: str) -> dict[str, Any]:
    """Every URL of the current book, and the SHA-256 of each stored file it points at."""
    book = services.store().book(story_id)
    assert book is not None
    files = [("image", i.public_id) for i in book.illustrations] + [
        ("video", c.public_id) for cs in book.chapters.values() for c in cs
    ]
    hashes = {}
    for resource_type, public_id in files:
        asset = fakes.cloudinary.asset(resource_type, public_id)
        assert asset is not None, public_id
        hashes[public_id] = hashlib.sha256(asset.data).hexdigest()
    urls = [book.banner_url, *(i.url for i in book.illustrations)]
    urls += [c.url for cs in book.chapters.values() for c in cs]
    return {"generation": book.generation_id, "urls": urls, "hashes": hashes}


def uploaded(calls: list[Call]) -> set[str]:
    """The public ids a list of Cloudinary calls stored successfully."""
    ids = set()
    for call in calls:
        if "/upload" in call.path and call.status == 200 and b'name="public_id"' in call.body:
            part = call.body.split(b'name="public_id"', 1)[1]
            ids.add(part.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0].decode())
    return ids


def test_a_regeneration_that_fails_late_touches_nothing_published(
    life_story: LifeStory, fakes: Fakes
) -> None:
    story(story_id=life_story.id, **BOOK)
    before = published(fakes, life_story.id)
    stored_before = set(fakes.cloudinary.public_ids())
    calls_before = len(fakes.cloudinary.calls)

    # New pictures (another style), then the speech API refuses the key (revoked): the
    # run fails after its images were stored.
    fakes.sarvam.schedule(Fault(status=403, path_contains="/text-to-speech"))
    with pytest.raises(Exception, match=r"403|rejected|refused|key"):
        story(story_id=life_story.id, image_style="minimalist", **BOOK)

    new_uploads = uploaded(fakes.cloudinary.calls[calls_before:]) - stored_before
    assert new_uploads, "the failed run stored pictures of its own before it failed"
    assert published(fakes, life_story.id) == before
    # What it stored is gone again; everything the book uses is still there.
    assert set(fakes.cloudinary.public_ids()) == stored_before
    latest = services.store().latest_generation(life_story.id)
    assert latest is not None
    assert latest.status == "failed"
    assert services.store().media_of(latest.id) == []


def test_two_runs_on_one_story_at_once_lose_nothing_silently(
    life_story: LifeStory, fakes: Fakes
) -> None:
    first = story(story_id=life_story.id, **BOOK).generation_id
    fakes.sarvam.latency = fakes.gemini.latency = 0.1
    errors: dict[str, BaseException] = {}

    def run(name: str, fn: Any, **params: Any) -> None:
        try:
            fn(story_id=life_story.id, **params)
        except BaseException as exc:
            errors[name] = exc

    runs = [
        threading.Thread(target=run, args=("story", story), kwargs={**BOOK, "tone": "joyful"}),
        threading.Thread(target=run, args=("narration", narration), kwargs={
            "languages": ["hi-IN"]}),
    ]  # fmt: skip
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()

    new = [g for g in services.store().generations(life_story.id) if g.id != first]
    assert len(new) == 2
    if all(g.base_generation_id == first for g in new):
        # Both started from the same book: one published, the other failed saying why.
        assert sorted(g.status for g in new) == ["complete", "failed"]
        loser = next(g for g in new if g.status == "failed")
        assert loser.error is not None
        assert "got a new book" in loser.error
        assert len(errors) == 1
        assert isinstance(next(iter(errors.values())), GenerationConflictError)
    else:
        # One started after the other had published: both published, in turn.
        assert not errors
        assert [g.status for g in new] == ["complete", "complete"]
        assert new[0].base_generation_id == new[1].id  # newest first


def spent(story_id: str) -> dict[str, Usage]:
    book = services.store().book(story_id)
    assert book is not None
    return {u.provider: u for u in book.usage}


def test_changing_nothing_pays_nothing(life_story: LifeStory, fakes: Fakes) -> None:
    story(story_id=life_story.id, **BOOK)
    first = spent(life_story.id)
    calls = [len(f.calls) for f in fakes.all]
    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=life_story.id, **BOOK)
    assert [len(f.calls) for f in fakes.all] == calls
    again = spent(life_story.id)
    for provider, usage in first.items():
        assert again[provider].calls == 0, provider
        assert again[provider].reused == usage.calls, provider


def test_a_new_prompt_version_pays_for_text_and_what_follows_from_it(
    life_story: LifeStory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    story(story_id=life_story.id, **BOOK)
    first = spent(life_story.id)
    # What a developer does when prompts change: bump the version.
    monkeypatch.setattr(prompts, "PROMPT_VERSION", prompts.PROMPT_VERSION + "-next")
    services.reset()
    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=life_story.id, **BOOK)
    again = spent(life_story.id)
    assert again["gemini-text"].calls == first["gemini-text"].calls
    assert again["gemini-text"].reused == 0
    # The fake writes the same words for a new prompt version: what follows the text
    # (pictures, speech) is asked again only where its input changed, and here it did
    # not; a real model's new text would pay for them too.
    assert again["gemini-image"].calls + again["gemini-image"].reused == first[
        "gemini-image"
    ].calls


def test_a_new_voice_pays_for_speech_only(
    life_story: LifeStory, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    story(story_id=life_story.id, **BOOK)
    first = spent(life_story.id)
    monkeypatch.setenv("STORYLOOM_SARVAM_SPEAKER", "kavya")
    services.reset()
    text_calls = len(fakes.gemini.calls)
    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=life_story.id, **BOOK)
    again = spent(life_story.id)
    assert len(fakes.gemini.calls) == text_calls  # no text, no pictures
    assert again["sarvam-tts"].calls == first["sarvam-tts"].calls
    assert again["sarvam-tts"].reused == 0
    assert again["gemini-text"].calls == 0
    assert again["gemini-image"].calls == 0
    speech = fakes.sarvam.calls_to("/text-to-speech")
    assert b'"speaker":"kavya"' in speech[-1].body.replace(b" ", b"")
