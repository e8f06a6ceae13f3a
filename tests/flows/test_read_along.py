"""Read-along narration against the Sarvam fake on the real client: sentence timings
measured from a voice that reads unevenly and pauses, and languages that fail alone."""

from __future__ import annotations

import itertools
import json

import pytest

from flows.narration import narration
from flows.story import story
from storyloom import services
from storyloom.audio import measure
from storyloom.models import AudioChapter, LifeStory
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

# A sentence's start may fall up to one 10 ms window and the 50 ms lead-in before the
# voice starts it.
TOLERANCE = 0.07


def _truth(fakes: Fakes) -> dict[tuple[str, ...], list[tuple[str, float, float]]]:
    """Every answer the fake gave, by its sentences (the last answer for a text wins)."""
    return {tuple(text for text, _, _ in spans): spans for spans in fakes.sarvam.spoken}


def test_sentence_timings_are_measured_from_the_voice(life_story: LifeStory, fakes: Fakes) -> None:
    story(story_id=life_story.id, pages=4, images=False, narration_languages=["en-IN"])

    book = services.store().book(life_story.id)
    assert book is not None
    chapters = book.chapters["en-IN"]
    truth = _truth(fakes)
    compared = 0
    estimate_missed_by = 0.0
    for chapter in chapters:
        timings = chapter.sentences
        assert " ".join(t.text for t in timings) == chapter.text
        assert timings[0].start == 0
        assert all(a.end == b.start for a, b in itertools.pairwise(timings))
        asset = fakes.cloudinary.asset("video", chapter.public_id)
        assert asset is not None
        data = asset.data
        assert timings[-1].end == pytest.approx(measure(data), abs=0.002)
        assert chapter.duration_seconds == pytest.approx(measure(data), abs=0.002)
        spans = truth.get(tuple(t.text for t in timings))
        if spans is None:  # the fake split this chapter's sentences otherwise
            continue
        compared += 1
        # Each sentence starts where the voice started it, not where its share of the
        # characters would put it: the voice reads each sentence at its own pace.
        chars = list(itertools.accumulate(len(t.text) for t in timings))
        total = spans[-1][2]
        for timing, (_, start, _), before in zip(timings[1:], spans[1:], chars, strict=False):
            assert timing.start == pytest.approx(start, abs=TOLERANCE), (timing.text, start)
            estimate_missed_by = max(estimate_missed_by, abs(total * before / chars[-1] - start))
    assert compared >= max(2, len(chapters) // 2)
    # The check above means something: an estimate from lengths would be far off.
    assert estimate_missed_by > 3 * TOLERANCE


def test_a_failing_language_leaves_the_others_and_costs_only_itself_later(
    life_story: LifeStory, fakes: Fakes
) -> None:
    fakes.sarvam.failing_languages["ta-IN"] = 500  # its voice is down, every time

    story(story_id=life_story.id, pages=4, images=False, narration_languages=["hi-IN", "ta-IN"])

    book = services.store().book(life_story.id)
    assert book is not None  # published: the Hindi narration is there
    assert set(book.chapters) == {"hi-IN"}
    assert list(book.narration_failures) == ["ta-IN"]
    assert "500" in book.narration_failures["ta-IN"] or "rror" in book.narration_failures["ta-IN"]
    assert book.config.narration_languages == ["hi-IN", "ta-IN"]
    hindi = _files(book.chapters["hi-IN"])

    # Alone, a language that still fails fails the run, and the book stays as it was.
    with pytest.raises(Exception, match="ta-IN"):
        narration(story_id=life_story.id, languages=["ta-IN"])
    unchanged = services.store().book(life_story.id)
    assert unchanged is not None
    assert unchanged.generation_id == book.generation_id

    # The voice is back: narrating the missing language costs only that language.
    fakes.sarvam.failing_languages.clear()
    fakes.sarvam.reset()
    narration(story_id=life_story.id, languages=["ta-IN"])

    after = services.store().book(life_story.id)
    assert after is not None
    assert after.generation_id != book.generation_id
    assert set(after.chapters) == {"hi-IN", "ta-IN"}
    assert after.narration_failures == {}
    assert _files(after.chapters["hi-IN"]) == hindi  # the same files, not spoken again
    speech = fakes.sarvam.calls_to("/text-to-speech")
    assert speech
    assert all(json.loads(c.body)["language_code"] == "ta-IN" for c in speech)
    translations = fakes.sarvam.calls_to("/translate")
    assert all(json.loads(c.body)["target_language_code"] == "ta-IN" for c in translations)


def _files(chapters: list[AudioChapter]) -> list[tuple[str, str]]:
    return [(c.public_id, c.url) for c in chapters]
