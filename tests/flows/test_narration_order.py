"""Narration keeps Sarvam (the busiest API) busy: every language's translation is asked
for before any speech, and the next language is voiced while the last one's chapters
upload. The story flow on the real clients against the fakes, uploads made slow."""

from __future__ import annotations

import json

import pytest

from flows.story import story
from storyloom import services
from storyloom.models import LifeStory
from tests.fakes.cloudinary import parse_multipart
from tests.fakes.server import Call
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

UPLOAD_SECONDS = 0.6


def language_of_speech(call: Call) -> str:
    body = json.loads(call.body)
    return str(body.get("target_language_code") or body.get("language_code"))


def audio_language_of_upload(call: Call) -> str | None:
    params, _, _ = parse_multipart(call.body, call.headers["content-type"])
    public_id = params.get("public_id", "")
    return public_id.split("/audio/")[1].split("/")[0] if "/audio/" in public_id else None


def test_languages_overlap_on_sarvam_and_the_uploads(life_story: LifeStory, fakes: Fakes) -> None:
    fakes.cloudinary.latency = UPLOAD_SECONDS
    story(
        story_id=life_story.id, pages=4, images=False, narration_languages=["en-IN", "hi-IN"],
    )  # fmt: skip

    book = services.store().book(life_story.id)
    assert book is not None
    assert set(book.chapters) == {"en-IN", "hi-IN"}
    speech = fakes.sarvam.calls_to("/text-to-speech")
    translations = fakes.sarvam.calls_to("/translate")
    uploads = [c for c in fakes.cloudinary.calls if c.path.endswith("/upload")]
    english_uploads = [c for c in uploads if audio_language_of_upload(c) == "en-IN"]
    hindi_speech = [c for c in speech if language_of_speech(c) == "hi-IN"]
    assert english_uploads
    assert hindi_speech
    assert translations
    # The Hindi text was asked for before the first English chapter was voiced...
    assert min(c.started for c in translations) < min(c.started for c in speech)
    # ...and Hindi was being voiced before the English chapters were all stored.
    assert min(c.started for c in hindi_speech) < max(c.ended for c in english_uploads)
    # Nothing paid twice on the way.
    bodies = [c.body for c in speech + translations]
    assert len(bodies) == len(set(bodies))
