"""Which stories need work again, and why: StoryStore.stories_needing_work on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from storyloom.models import (
    AudioChapter,
    GenerationConfig,
    Illustration,
    Language,
    LifeStage,
    LifeStory,
    Page,
    Tone,
)
from storyloom.store.records import WorkItem
from storyloom.store.repository import StoryStore, read_config
from storyloom.store.tables import GenerationRow

NOW = "v2"  # the prompt version the code runs with in these tests
CONFIG = GenerationConfig(pages=4, image_count=2, narration_languages=["hi-IN", "ta-IN"])


def story(story_id: str) -> LifeStory:
    return LifeStory(
        id=story_id,
        kind="life",
        title=f"Story {story_id}",
        language="hi-IN",
        stages={LifeStage.CHILDHOOD: ["मेरी दादी गाँव में रहती थीं।"]},
    )


def illustration(position: int) -> Illustration:
    return Illustration(
        position=position,
        page_number=position,
        prompt="a village at dusk",
        public_id=f"page-{position:02d}",
        url=f"https://media.test/{position}.png",
        thumbnail_url=f"https://media.test/{position}-thumb.png",
        width=64,
        height=64,
    )


def chapter(language: Language) -> AudioChapter:
    return AudioChapter(
        language=language,
        position=1,
        title="One",
        text="...",
        first_page=1,
        duration_seconds=60.0,
        public_id=f"audio/{language}/chapter-01",
        url=f"https://media.test/{language}.wav",
    )


def generate(
    store: StoryStore,
    story_id: str,
    *,
    config: GenerationConfig = CONFIG,
    prompt_version: str = NOW,
    illustrations: int | None = None,
    languages: list[Language] | None = None,
    outcome: str = "publish",
) -> str:
    """One generation of the story with the outputs asked for (by default all of them)."""
    generation_id = store.start_generation(story_id, config, prompt_version=prompt_version)
    if outcome == "running":
        return generation_id
    if outcome == "fail":
        store.fail(generation_id, "TransientError: the model timed out\nTraceback ...")
        return generation_id
    store.save_pages(
        generation_id, [Page(number=n, text="...", words=1) for n in range(1, config.pages + 1)]
    )
    count = config.illustrations if illustrations is None else illustrations
    store.save_illustrations(generation_id, [illustration(p) for p in range(1, count + 1)])
    wanted = (config.narration_languages or []) if languages is None else languages
    for language in wanted:
        store.save_chapters(generation_id, language, [chapter(language)])
    store.publish(generation_id)
    return generation_id


def added(store: StoryStore, *story_ids: str) -> None:
    for story_id in story_ids:
        store.add_story(story(story_id))


def by_story(items: list[WorkItem]) -> dict[str, WorkItem]:
    return {item.story_id: item for item in items}


def rewrite_config(store: StoryStore, generation_id: str, config: dict[str, Any]) -> None:
    """Store a config JSON as an older version of the code would have written it."""
    with store.engine.begin() as connection:
        connection.execute(
            update(GenerationRow).where(GenerationRow.id == generation_id).values(config=config)
        )


def test_up_to_date_and_never_generated_stories_need_nothing(store: StoryStore) -> None:
    added(store, "fresh", "untouched")
    generate(store, "fresh")
    assert store.stories_needing_work(prompt_version=NOW) == []


def test_a_failed_last_run_is_redone_as_it_was_asked_for(store: StoryStore) -> None:
    added(store, "flaky")
    generate(store, "flaky")
    asked = CONFIG.model_copy(update={"pages": 8})
    failed = generate(store, "flaky", config=asked, outcome="fail")

    (item,) = store.stories_needing_work(prompt_version=NOW)
    assert (item.story_id, item.reason, item.key) == ("flaky", "last run failed", failed)
    assert item.detail == "TransientError: the model timed out"
    assert item.config == asked  # the newest request, not the older book's config


def test_a_story_that_never_had_a_book_is_redone_with_the_failed_runs_config(
    store: StoryStore,
) -> None:
    added(store, "never")
    wanted = CONFIG.model_copy(update={"pages": 8, "tone": Tone.JOYFUL})
    failed = generate(store, "never", config=wanted, outcome="fail")

    (item,) = store.stories_needing_work(prompt_version=NOW)
    assert (item.reason, item.key, item.config) == ("last run failed", failed, wanted)


def test_a_failure_followed_by_a_complete_run_is_not_a_failure(store: StoryStore) -> None:
    added(store, "recovered")
    generate(store, "recovered", outcome="fail")
    generate(store, "recovered")
    assert store.stories_needing_work(prompt_version=NOW) == []


def test_a_story_still_running_is_left_alone(store: StoryStore) -> None:
    added(store, "busy")
    generate(store, "busy", prompt_version="v1", illustrations=0)  # would need work...
    generate(store, "busy", outcome="running")  # ...but a run is on it
    assert store.stories_needing_work(prompt_version=NOW) == []


def test_a_run_that_never_finished_is_redone_after_a_while(store: StoryStore) -> None:
    added(store, "orphan")
    generate(store, "orphan")
    asked = CONFIG.model_copy(update={"pages": 8})
    stuck = generate(store, "orphan", config=asked, outcome="running")  # its worker died

    assert store.stories_needing_work(prompt_version=NOW) == []  # not yet: it may be working
    (item,) = store.stories_needing_work(prompt_version=NOW, abandoned_after=timedelta(0))
    assert (item.reason, item.key, item.config) == ("last run abandoned", stuck, asked)


def test_missing_illustrations_or_narration_languages(store: StoryStore) -> None:
    added(store, "few-images", "one-voice", "no-images-asked", "no-voice-asked")
    generate(store, "few-images", illustrations=1)
    generate(store, "one-voice", languages=["hi-IN"])
    generate(store, "no-images-asked", config=CONFIG.model_copy(update={"images": False}))
    generate(store, "no-voice-asked", config=CONFIG.model_copy(update={"narration_languages": []}))

    items = by_story(store.stories_needing_work(prompt_version=NOW))
    assert set(items) == {"few-images", "one-voice"}
    assert items["few-images"].reason == items["one-voice"].reason == "missing outputs"
    assert items["few-images"].detail == "1 of 2 illustrations"
    assert items["one-voice"].detail == "no narration in ta-IN"


def test_a_config_without_languages_is_narrated_in_the_storys_language(
    store: StoryStore,
) -> None:
    added(store, "old-default")
    generation_id = generate(store, "old-default", languages=[])
    # Saved before defaults were resolved: no narration_languages means the story's own.
    rewrite_config(
        store, generation_id, {**CONFIG.model_dump(mode="json"), "narration_languages": None}
    )
    (item,) = store.stories_needing_work(prompt_version=NOW)
    assert (item.reason, item.detail) == ("missing outputs", "no narration in hi-IN")


def test_an_older_prompt_version(store: StoryStore) -> None:
    added(store, "dated")
    current = generate(store, "dated", prompt_version="v1")
    (item,) = store.stories_needing_work(prompt_version=NOW)
    assert (item.reason, item.detail, item.key) == (
        "older prompt version",
        "prompts v1, now v2",
        current,
    )
    assert item.config == CONFIG
    assert store.stories_needing_work(prompt_version="v1") == []


def test_a_config_saved_by_an_older_schema(store: StoryStore) -> None:
    added(store, "legacy")
    current = generate(store, "legacy")
    saved = CONFIG.model_dump(mode="json")
    del saved["image_style"]  # a field added since
    saved["voice"] = "warm"  # a field since removed
    rewrite_config(store, current, saved)

    (item,) = store.stories_needing_work(prompt_version=NOW)
    assert (item.reason, item.key) == ("older config", current)
    assert item.detail == "saved by an older schema: image_style, voice"
    assert item.config == CONFIG  # the new field at its default, the old one gone


def test_read_config_repairs_what_todays_schema_refuses() -> None:
    config, changed = read_config({**CONFIG.model_dump(mode="json"), "tone": "grumpy"})
    assert config == CONFIG.model_copy(update={"tone": "warm"})
    assert changed == ["tone"]
    assert read_config(CONFIG.model_dump(mode="json")) == (CONFIG, [])
    # Nothing can be salvaged: the defaults, and every field that differs from them.
    config, changed = read_config({"pages": 2, "image_count": 5})
    assert config == GenerationConfig()
    assert "pages" in changed


def test_one_reason_per_story_in_priority_order(store: StoryStore) -> None:
    added(store, "a-fail", "b-missing", "c-prompt", "d-config")
    old_schema = {k: v for k, v in CONFIG.model_dump(mode="json").items() if k != "audience"}
    for story_id in ("a-fail", "b-missing", "c-prompt", "d-config"):
        # Every story has an older prompt version and a config from an older schema...
        generation_id = generate(
            store,
            story_id,
            prompt_version="v1",
            illustrations=1 if story_id in ("a-fail", "b-missing") else None,
        )
        rewrite_config(store, generation_id, old_schema)
    generate(store, "a-fail", outcome="fail")
    # ...but d-config is regenerated with today's prompts (its config still the old kind).
    rewrite_config(store, generate(store, "d-config"), old_schema)

    items = store.stories_needing_work(prompt_version=NOW)
    assert [(i.story_id, i.reason) for i in items] == [
        ("a-fail", "last run failed"),
        ("b-missing", "missing outputs"),
        ("c-prompt", "older prompt version"),
        ("d-config", "older config"),
    ]


def test_within_a_reason_the_longest_waiting_comes_first_and_limit_cuts(
    store: StoryStore,
) -> None:
    added(store, "z-first", "a-second", "m-third")
    for story_id in ("z-first", "a-second", "m-third"):
        generate(store, story_id, outcome="fail")
    items = store.stories_needing_work(prompt_version=NOW)
    assert [i.story_id for i in items] == ["z-first", "a-second", "m-third"]
    assert items[0].last_run_at < items[1].last_run_at
    assert items[0].last_run_at.tzinfo is not None
    assert [i.story_id for i in store.stories_needing_work(prompt_version=NOW, limit=2)] == [
        "z-first",
        "a-second",
    ]
    assert store.stories_needing_work(prompt_version=NOW, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.stories_needing_work(prompt_version=NOW, limit=-1)


def test_the_key_changes_with_every_new_run(store: StoryStore) -> None:
    added(store, "again")
    generate(store, "again", outcome="fail")
    (first,) = store.stories_needing_work(prompt_version=NOW)
    assert store.stories_needing_work(prompt_version=NOW) == [first]  # same state, same key
    generate(store, "again", outcome="fail")
    (second,) = store.stories_needing_work(prompt_version=NOW)
    assert second.key != first.key


def test_the_number_of_queries_does_not_grow_with_the_stories(store: StoryStore) -> None:
    def queries(stories: int) -> int:
        statements: list[str] = []

        def count(*args: Any) -> None:
            statement = args[2]
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append(statement)

        event.listen(store.engine, "before_cursor_execute", count)
        try:
            items = store.stories_needing_work(prompt_version=NOW)
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        assert len(items) == stories
        return len(statements)

    added(store, "s0")
    generate(store, "s0", illustrations=1)
    few = queries(1)
    for n in range(1, 8):
        added(store, f"s{n}")
        generate(store, f"s{n}", prompt_version="v1" if n % 2 else NOW, illustrations=n % 3)
        generate(store, f"s{n}", outcome="fail" if n % 3 == 0 else "publish", illustrations=0)
    assert queries(8) == few <= 3
