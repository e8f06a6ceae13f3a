"""Editing one stage of a life story and generating again pays only for that stage: its
writing, its pages' pictures and its chapters' speech (issue 7, item 5).

The whole `story` flow on the real clients against the loopback fakes; the second
generation reads Prefect's cache, so the fakes' call logs show what it paid for.
"""

from __future__ import annotations

import json

import pytest
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

from flows.story import story
from storyloom import services
from storyloom.chapters import chunk_text
from storyloom.models import LifeStage, LifeStory
from storyloom.store.records import StoryBook
from storyloom.writing import plan_sections
from tests.fakes.gemini import GeminiRequest, Misbehave
from tests.fakes.server import Call
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

PAGES = 8
LANGUAGE = "hi-IN"  # not the story's: the pages are translated too
EDITED = LifeStage.CHILDHOOD  # the second of seven stages: two pages, from page 2
SECTION = "Section 2 of 7: Childhood."
# An edit inside the stage: two memories rewritten, its first and last kept, so the
# neighbouring sections' briefs (which carry the stage's edges for continuity) stay put.
NEW_MEMORIES = {
    3: "My grandfather kept a transistor radio on the windowsill, and the whole house "
    "went quiet whenever the cricket commentary came on.",
    7: "On Sundays my father took us to the Aminabad market for kulfi and bought one "
    "song book, from which he sang to us every night until the lamp ran out of oil.",
}


def _book(story_id: str) -> StoryBook:
    book = services.store().book(story_id)
    assert book is not None
    return book


def _model(name: str) -> str:
    return name.split(":")[-1]


def _layout(tale: LifeStory) -> list[tuple[str, int, int]]:
    budgets = plan_sections(tale.kind, tale.material(), PAGES, 250)
    return [(b.key, b.first_page, b.pages) for b in budgets]


def _prompt(call: Call) -> str:
    """The user text a generateContent call sent, read from the call log."""
    return GeminiRequest("", "", {}, json.loads(call.body)).prompt_text


def _sarvam(calls: list[Call], field: str) -> list[str]:
    return [str(json.loads(c.body)[field]) for c in calls]


def _within(part: list[str], whole: list[str]) -> bool:
    """Whether the words of `part` appear, in order and together, in `whole`."""
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_editing_one_stage_pays_only_for_that_stage(life_story: LifeStory, fakes: Fakes) -> None:
    story(story_id=life_story.id, pages=PAGES, narration_languages=[LANGUAGE])
    before = _book(life_story.id)
    text_model = _model(services.providers().writer.name)
    image_model = _model(services.providers().illustrator.name)
    paid = {
        "upload": len(fakes.cloudinary.calls_to("/upload")),
        "text": len(fakes.gemini_calls(text_model)),
        "image": len(fakes.gemini_calls(image_model)),
        "speech": len(fakes.sarvam.calls_to("/text-to-speech")),
        "translate": len(fakes.sarvam.calls_to("/translate")),
    }
    assert paid["image"] == PAGES

    memories = list(life_story.stages[EDITED])
    for index, memory in NEW_MEMORIES.items():
        memories[index] = memory
    edited = life_story.model_copy(update={"stages": {**life_story.stages, EDITED: memories}})
    # The edit keeps the stage's share of the book (its material is about as long), so
    # every section keeps its pages: the case the design makes cheap.
    assert _layout(edited) == _layout(life_story)
    own_first, own_count = next((f, n) for k, f, n in _layout(edited) if k == EDITED.value)
    own = set(range(own_first, own_first + own_count))
    assert own == {2, 3}
    services.store().add_story(edited, replace=True)
    # The model answers the edited stage 30% over: the section is revised once. Only
    # the edited stage's calls reach the model: every other section is cached.
    fakes.gemini.script_text(Misbehave.LONG, kind="section", contains=SECTION)

    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=life_story.id, pages=PAGES, narration_languages=[LANGUAGE])
    after = _book(life_story.id)
    assert after.generation_id != before.generation_id

    # Pages: the edited stage's are new and hold its revised text; every other page is
    # exactly as it was.
    assert [p.number for p in after.pages] == list(range(1, PAGES + 1))
    own_pages = [p for p in after.pages if p.number in own]
    assert after.writing is not None
    childhood = next(s for s in after.writing.sections if s.key == EDITED.value)
    assert sum(p.words for p in own_pages) == childhood.words
    assert childhood.length_miss is None
    assert childhood.revisions == 1
    for old, new in zip(before.pages, after.pages, strict=True):
        if new.number in own:
            assert new.text != old.text
        else:
            assert new == old

    # Gemini text: the edited section's writing (the section, its revision, the proofread
    # of the revision) and one illustration prompt for each of its pages; nothing else.
    prompts = [_prompt(c) for c in fakes.gemini_calls(text_model)[paid["text"] :]]
    sections = [p for p in prompts if SECTION in p]
    proofreads = [p for p in prompts if p.startswith("Proofread")]
    plans = [p for p in prompts if "Page text:" in p]
    assert len(sections) + len(proofreads) + len(plans) == len(prompts), prompts
    assert len(sections) == 2
    assert not any(line.startswith("Remove:") for line in sections[1].splitlines())
    assert "Target: about" in sections[1]
    assert len(proofreads) == 1
    assert all(memory.split(",")[0] in proofreads[0] for memory in NEW_MEMORIES.values())
    planned = sorted(p.number for p in own_pages for prompt in plans if p.text in prompt)
    assert planned == sorted(own)
    assert len(plans) == len(own)

    # Gemini image: one picture for each of the edited section's pages; the others kept.
    scenes = {i.prompt for i in after.illustrations if i.page_number in own}
    drawn = [_prompt(c) for c in fakes.gemini_calls(image_model)[paid["image"] :]]
    assert len(drawn) == len(scenes) == len(own)
    assert {s for s in scenes for prompt in drawn if f"Scene: {s}" in prompt} == scenes
    kept = {i.page_number: i.prompt for i in before.illustrations if i.page_number not in own}
    assert kept == {
        i.page_number: i.prompt for i in after.illustrations if i.page_number not in own
    }

    # Sarvam: the edited pages translated, and the speech of the edited section's
    # chapters only; every other chapter has the same text as before.
    translated = _sarvam(fakes.sarvam.calls_to("/translate")[paid["translate"] :], "input")
    own_words = [p.text.split() for p in own_pages]
    assert translated
    assert all(any(_within(t.split(), words) for words in own_words) for t in translated)
    chapters_before, chapters_after = before.chapters[LANGUAGE], after.chapters[LANGUAGE]
    assert [c.text for c in chapters_after if c.first_page not in own] == [
        c.text for c in chapters_before if c.first_page not in own
    ]
    max_chars = services.providers().speaker.max_chars
    expected = [
        piece
        for c in chapters_after
        if c.first_page in own
        for piece in chunk_text(c.text, max_chars)
    ]
    spoken = _sarvam(fakes.sarvam.calls_to("/text-to-speech")[paid["speech"] :], "text")
    assert expected
    assert sorted(spoken) == sorted(expected)

    # Cloudinary: only the new pictures and chapters are uploaded; every other file of
    # the book is the very file the previous book used (same public id and URL).
    new_files = [i for i in after.illustrations if i.page_number in own] + [
        c for c in chapters_after if c.first_page in own
    ]
    uploads = fakes.cloudinary.calls_to("/upload")[paid["upload"] :]
    assert len(uploads) == len(new_files)
    old_urls = {i.url for i in before.illustrations} | {c.url for c in chapters_before}
    assert [i.url for i in after.illustrations if i.page_number not in own] == [
        i.url for i in before.illustrations if i.page_number not in own
    ]
    assert [c.url for c in chapters_after if c.first_page not in own] == [
        c.url for c in chapters_before if c.first_page not in own
    ]
    assert not {f.url for f in new_files} & old_urls
