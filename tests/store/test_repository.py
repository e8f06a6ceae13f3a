"""StoryStore on SQLite and PostgreSQL: stories, generations, and books that change atomically."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select, text
from sqlalchemy.engine import Engine

from storyloom.models import (
    AudioChapter,
    CreativeStory,
    GenerationConfig,
    Illustration,
    Language,
    LifeStage,
    LifeStory,
    Page,
    Usage,
)
from storyloom.store.records import StoryBook
from storyloom.store.repository import (
    MAX_ERROR_CHARS,
    GenerationConflictError,
    GenerationNotFoundError,
    GenerationStateError,
    StoryExistsError,
    StoryNotFoundError,
    StoryStore,
    sum_usage,
)
from storyloom.store.tables import PageRow

HINDI = "मेरी दादी गाँव में रहती थीं। हर शाम वह कहानियाँ सुनाती थीं।"
TAMIL = "என் பாட்டி கிராமத்தில் வாழ்ந்தார். ஒவ்வொரு மாலையும் கதைகள் சொன்னார்."

CONFIG = GenerationConfig(pages=4, image_count=2, narration_languages=["hi-IN", "ta-IN"])


def life_story(story_id: str = "dadi", title: str = "दादी की कहानी") -> LifeStory:
    return LifeStory(
        id=story_id,
        kind="life",
        title=title,
        language="hi-IN",
        stages={LifeStage.CHILDHOOD: [HINDI], LifeStage.LEGACY: ["Her recipes live on."]},
    )


def creative_story(story_id: str = "paatti") -> CreativeStory:
    return CreativeStory(
        id=story_id, kind="creative", title="பாட்டியின் கதை", language="ta-IN", premise=TAMIL
    )


# Every output carries the id of the generation it was made for, so a reader can tell
# whether a book mixes two generations.


def pages(generation_id: str, count: int = CONFIG.pages) -> list[Page]:
    return [
        Page(number=n, text=f"{generation_id}:{n} {HINDI}", words=12) for n in range(1, count + 1)
    ]


def illustrations(generation_id: str, count: int = 2) -> list[Illustration]:
    return [
        Illustration(
            position=p,
            page_number=p * 2 - 1,
            prompt=f"{generation_id}:{p}",
            public_id=f"stories/dadi/images/page-{p:02d}",
            url=f"https://media.test/{generation_id}/{p}.png",
            thumbnail_url=f"https://media.test/{generation_id}/{p}-thumb.png",
            width=1024,
            height=768,
            version=generation_id[:8],
        )
        for p in range(1, count + 1)
    ]


def chapters(generation_id: str, language: Language, count: int = 2) -> list[AudioChapter]:
    return [
        AudioChapter(
            language=language,
            position=p,
            title=f"{generation_id}:{p}",
            text=TAMIL if language == "ta-IN" else HINDI,
            first_page=p,
            duration_seconds=58.25,
            public_id=f"stories/dadi/audio/{language}/chapter-{p:02d}",
            url=f"https://media.test/{generation_id}/{language}/{p}.wav",
        )
        for p in range(1, count + 1)
    ]


def fill(store: StoryStore, generation_id: str) -> None:
    """Save every output a CONFIG generation has."""
    store.save_pages(generation_id, pages(generation_id))
    store.save_illustrations(generation_id, illustrations(generation_id))
    store.save_chapters(generation_id, "hi-IN", chapters(generation_id, "hi-IN"))
    store.save_chapters(generation_id, "ta-IN", chapters(generation_id, "ta-IN"))


def published(store: StoryStore, story_id: str = "dadi") -> str:
    """A generation of the story, filled and published."""
    generation_id = store.start_generation(story_id, CONFIG, prompt_version="v1")
    fill(store, generation_id)
    store.publish(generation_id)
    return generation_id


def assert_whole(book: StoryBook) -> None:
    """Every output of the book belongs to its generation, and none is missing."""
    marker = f"{book.generation_id}:"
    assert len(book.pages) == book.config.pages
    assert all(p.text.startswith(marker) for p in book.pages)
    assert len(book.illustrations) == book.config.illustrations
    assert all(i.prompt.startswith(marker) for i in book.illustrations)
    assert sorted(book.chapters) == sorted(book.config.narration_languages or [])
    assert all(c.title.startswith(marker) for cs in book.chapters.values() for c in cs)
    assert book.banner_url == book.illustrations[0].url


def count_pages(engine: Engine, generation_id: str) -> int:
    with engine.connect() as connection:
        query = select(func.count()).where(PageRow.generation_id == generation_id)
        return connection.scalar(query) or 0


# Stories


def test_stories_round_trip_with_hindi_and_tamil(store: StoryStore) -> None:
    store.add_story(life_story())
    store.add_story(creative_story())

    assert store.get_story("dadi") == life_story()
    assert store.get_story("paatti") == creative_story()
    assert isinstance(store.get_story("paatti"), CreativeStory)


def test_adding_a_story_twice_raises_unless_replacing(store: StoryStore) -> None:
    store.add_story(life_story())
    with pytest.raises(StoryExistsError):
        store.add_story(life_story(title="Another"))
    assert store.get_story("dadi").title == "दादी की कहानी"


def test_replacing_a_story_keeps_its_book(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = published(store)

    store.add_story(life_story(title="Dadi, again"), replace=True)

    assert store.get_story("dadi").title == "Dadi, again"
    book = store.book("dadi")
    assert book is not None
    assert book.generation_id == generation_id
    assert book.story.title == "Dadi, again"
    assert [s.title for s in store.list_stories()] == ["Dadi, again"]


def test_missing_stories_raise_not_found(store: StoryStore) -> None:
    for call in (
        lambda: store.get_story("nobody"),
        lambda: store.delete_story("nobody"),
        lambda: store.book("nobody"),
        lambda: store.latest_generation("nobody"),
        lambda: store.start_generation("nobody", CONFIG, prompt_version="v1"),
    ):
        with pytest.raises(StoryNotFoundError):
            call()


def test_list_stories_summarises_status_and_pages(store: StoryStore) -> None:
    assert store.list_stories() == []
    store.add_story(life_story())
    store.add_story(creative_story())

    first = {s.id: s for s in store.list_stories()}
    assert set(first) == {"dadi", "paatti"}
    assert (first["dadi"].status, first["dadi"].pages) == (None, 0)
    assert (first["paatti"].kind, first["paatti"].language) == ("creative", "ta-IN")

    published(store)
    failing = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.fail(failing, "the model refused")

    summaries = store.list_stories()
    assert summaries[0].id == "dadi"  # the most recently updated comes first
    assert (summaries[0].status, summaries[0].pages) == ("failed", CONFIG.pages)
    assert summaries[0].updated_at.tzinfo is not None


def test_deleting_a_story_deletes_its_generations_and_outputs(store: StoryStore) -> None:
    store.add_story(life_story())
    store.add_story(creative_story())
    previous = published(store)
    current = published(store)
    running = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.save_pages(running, pages(running))
    kept = published(store, "paatti")

    store.delete_story("dadi")

    with pytest.raises(StoryNotFoundError):
        store.get_story("dadi")
    for generation_id in (previous, current, running):
        with pytest.raises(GenerationNotFoundError):
            store.generation(generation_id)
        assert count_pages(store.engine, generation_id) == 0
    assert [s.id for s in store.list_stories()] == ["paatti"]
    assert count_pages(store.engine, kept) == CONFIG.pages
    with store.engine.connect() as connection:
        # Only the other story's book is left: 2 images, 2 chapters in each of 2 languages.
        for table, rows in (("illustrations", 2), ("audio_chapters", 4), ("generations", 1)):
            assert connection.scalar(text(f"SELECT count(*) FROM {table}")) == rows  # noqa: S608


# Generations


def test_generation_lifecycle(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v7", flow_run_id="run-1")
    running = store.generation(generation_id)
    assert (running.status, running.finished_at, running.pages) == ("running", None, [])
    assert store.book("dadi") is None  # nothing published yet

    fill(store, generation_id)
    store.publish(generation_id)

    book = store.book("dadi")
    assert book is not None
    assert_whole(book)
    assert book.status == "complete"
    assert (book.prompt_version, book.flow_run_id, book.config) == ("v7", "run-1", CONFIG)
    assert [p.number for p in book.pages] == [1, 2, 3, 4]
    assert [c.position for c in book.chapters["ta-IN"]] == [1, 2]
    assert book.thumbnail_url == book.illustrations[0].thumbnail_url
    assert book.finished_at is not None
    assert book.created_at <= book.finished_at
    assert book.finished_at.tzinfo == UTC
    info = store.latest_generation("dadi")
    assert info is not None
    assert (info.id, info.status, info.current) == (generation_id, "complete", True)


def test_outputs_stay_invisible_until_publish(store: StoryStore, store_url: str) -> None:
    store.add_story(life_story())
    old = published(store)
    new = store.start_generation("dadi", CONFIG, prompt_version="v2")

    # Another store (its own engine and connections), as another worker would be.
    with StoryStore(store_url) as reader:
        saves: list[Callable[[], None]] = [
            lambda: store.save_pages(new, pages(new)),
            lambda: store.save_illustrations(new, illustrations(new)),
            lambda: store.save_chapters(new, "hi-IN", chapters(new, "hi-IN")),
            lambda: store.save_chapters(new, "ta-IN", chapters(new, "ta-IN")),
        ]
        for save in saves:
            save()
            book = reader.book("dadi")
            assert book is not None
            assert book.generation_id == old
            assert_whole(book)

        store.publish(new)
        book = reader.book("dadi")
        assert book is not None
        assert book.generation_id == new
        assert_whole(book)


def test_a_book_is_read_from_one_snapshot(store: StoryStore, store_url: str) -> None:
    """Two publishes land while a reader is halfway through: it still sees one whole book."""
    store.add_story(life_story())
    first = published(store)
    second = store.start_generation("dadi", CONFIG, prompt_version="v2")
    fill(store, second)

    with StoryStore(store_url) as reader:
        fired: list[str] = []

        @event.listens_for(reader.engine, "before_cursor_execute")
        def publish_midway(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
            # Between the reader's look at the story and its read of the pages. The
            # second publish prunes `first`, the very generation being read.
            if "FROM pages" in statement and not fired:
                fired.append(statement)
                store.publish(second)
                third = store.start_generation("dadi", CONFIG, prompt_version="v3")
                fill(store, third)
                store.publish(third)
                fired.append(third)

        book = reader.book("dadi")

    assert fired
    assert book is not None
    assert book.generation_id == first
    assert_whole(book)
    with pytest.raises(GenerationNotFoundError):
        store.generation(first)  # it really was pruned under the reader
    after = store.book("dadi")
    assert after is not None
    assert after.generation_id == fired[-1]


def test_a_concurrent_reader_only_ever_sees_whole_books(store: StoryStore, store_url: str) -> None:
    store.add_story(life_story())
    first = published(store)
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []

    def read() -> None:
        with StoryStore(store_url) as reader:
            while not stop.is_set():
                try:
                    book = reader.book("dadi")
                    assert book is not None
                    assert_whole(book)
                    seen.append(book.generation_id)
                except BaseException as exc:
                    failures.append(exc)
                    return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        publishes = [published(store) for _ in range(6)]
    finally:
        stop.set()
        thread.join(timeout=60)

    assert failures == []
    assert seen, "the reader never got a book"
    assert set(seen) <= {first, *publishes}


def test_a_failed_generation_keeps_the_previous_book(store: StoryStore) -> None:
    store.add_story(life_story())
    old = published(store)
    new = store.start_generation("dadi", CONFIG, prompt_version="v2")
    store.save_pages(new, pages(new, 2))

    store.fail(new, "Traceback ... " + "x" * 10_000)

    book = store.book("dadi")
    assert book is not None
    assert book.generation_id == old
    assert_whole(book)
    latest = store.latest_generation("dadi")
    assert latest is not None
    assert (latest.id, latest.status, latest.current) == (new, "failed", False)
    assert latest.error is not None
    assert latest.error.startswith("Traceback ... xxx")
    assert len(latest.error) == MAX_ERROR_CHARS
    assert latest.finished_at is not None
    failed = store.generation(new)
    assert (failed.status, len(failed.pages)) == ("failed", 2)  # kept for a look


def test_fail_is_idempotent_and_refuses_a_published_generation(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.fail(generation_id, "first")
    store.fail(generation_id, "second")
    assert store.generation(generation_id).error == "first"
    with pytest.raises(GenerationStateError):
        store.publish(generation_id)

    complete = published(store)
    with pytest.raises(GenerationStateError):
        store.fail(complete, "too late")
    assert store.generation(complete).status == "complete"


def test_saving_into_a_finished_generation_raises(store: StoryStore) -> None:
    store.add_story(life_story())
    complete = published(store)
    failed = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.fail(failed, "boom")

    for generation_id in (complete, failed):
        with pytest.raises(GenerationStateError):
            store.save_pages(generation_id, pages(generation_id))
        with pytest.raises(GenerationStateError):
            store.save_illustrations(generation_id, illustrations(generation_id))
        with pytest.raises(GenerationStateError):
            store.save_chapters(generation_id, "hi-IN", chapters(generation_id, "hi-IN"))
    book = store.book("dadi")
    assert book is not None
    assert_whole(book)  # the refused saves changed nothing
    with pytest.raises(GenerationNotFoundError):
        store.save_pages("no-such-generation", [])


def test_saves_replace_their_kind_and_chapters_their_language(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.save_pages(generation_id, pages(generation_id, 6))
    store.save_chapters(generation_id, "hi-IN", chapters(generation_id, "hi-IN", 3))
    store.save_chapters(generation_id, "ta-IN", chapters(generation_id, "ta-IN", 2))

    store.save_pages(generation_id, pages(generation_id, 4))
    store.save_chapters(generation_id, "hi-IN", chapters(generation_id, "hi-IN", 1))

    book = store.generation(generation_id)
    assert [p.number for p in book.pages] == [1, 2, 3, 4]
    assert {lang: len(cs) for lang, cs in book.chapters.items()} == {"hi-IN": 1, "ta-IN": 2}
    assert book.chapters["ta-IN"][0].text == TAMIL


def test_saves_refuse_inconsistent_input(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    with pytest.raises(ValueError, match="page number repeated: 2"):
        store.save_pages(generation_id, [*pages(generation_id, 2), pages(generation_id, 2)[1]])
    with pytest.raises(ValueError, match="ta-IN saved as hi-IN"):
        store.save_chapters(generation_id, "hi-IN", chapters(generation_id, "ta-IN"))
    assert store.generation(generation_id).pages == []


def test_publish_needs_pages_and_is_idempotent(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    with pytest.raises(GenerationStateError, match="no pages"):
        store.publish(generation_id)

    store.save_pages(generation_id, pages(generation_id))
    store.publish(generation_id)
    store.publish(generation_id)  # a retried publish task

    book = store.book("dadi")
    assert book is not None
    assert (book.generation_id, book.banner_url, book.illustrations) == (generation_id, None, [])
    with pytest.raises(GenerationNotFoundError):
        store.publish("no-such-generation")


def test_copy_from_current_carries_outputs_over(store: StoryStore) -> None:
    store.add_story(life_story())
    old = published(store)

    # Only the images are redone: pages and narration come from the current book.
    new = store.start_generation(
        "dadi", CONFIG, prompt_version="v2", copy_from_current=["pages", "chapters"]
    )
    copied = store.generation(new)
    old_book = store.generation(old)
    assert copied.pages == old_book.pages
    assert copied.chapters == old_book.chapters
    assert copied.illustrations == []

    store.save_illustrations(new, illustrations(new, 3))
    store.publish(new)

    book = store.book("dadi")
    assert book is not None
    assert book.generation_id == new
    assert book.pages == old_book.pages
    assert [i.prompt.split(":")[0] for i in book.illustrations] == [new] * 3
    assert book.banner_url == f"https://media.test/{new}/1.png"
    assert store.generation(old).pages == old_book.pages  # the source is untouched


def test_copy_from_current_needs_a_current_book(store: StoryStore) -> None:
    store.add_story(life_story())
    with pytest.raises(GenerationStateError, match="no published book"):
        store.start_generation("dadi", CONFIG, prompt_version="v1", copy_from_current=["pages"])
    assert store.latest_generation("dadi") is None


def test_usage_accumulates_per_provider(store: StoryStore) -> None:
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.add_usage(
        generation_id,
        [
            Usage(provider="gemini-text", input_tokens=100, output_tokens=40),
            Usage(provider="sarvam-tts", characters=500),
        ],
    )
    store.add_usage(
        generation_id,
        [
            Usage(provider="gemini-text", input_tokens=10, output_tokens=4),
            Usage(provider="gemini-text", calls=2, input_tokens=1, output_tokens=1),
        ],
    )
    store.fail(generation_id, "late usage still counts")
    store.add_usage(generation_id, [Usage(provider="sarvam-tts", characters=20)])

    assert store.generation(generation_id).usage == [
        Usage(provider="gemini-text", calls=4, input_tokens=111, output_tokens=45),
        Usage(provider="sarvam-tts", calls=2, characters=520),
    ]


def test_sum_usage_orders_by_provider() -> None:
    assert sum_usage([Usage(provider="b"), Usage(provider="a"), Usage(provider="b")]) == [
        Usage(provider="a"),
        Usage(provider="b", calls=2),
    ]
    assert sum_usage([]) == []


def test_publish_prunes_all_but_current_and_previous(store: StoryStore) -> None:
    store.add_story(life_story())
    store.add_story(creative_story())
    other_story = published(store, "paatti")
    oldest = published(store)
    failed_old = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.fail(failed_old, "boom")
    still_running = store.start_generation("dadi", CONFIG, prompt_version="v1")
    store.save_pages(still_running, pages(still_running))
    previous = published(store)
    current = store.start_generation("dadi", CONFIG, prompt_version="v1")
    failed_newer = store.start_generation("dadi", CONFIG, prompt_version="v1")
    fill(store, current)
    store.fail(failed_newer, "newer failure")

    store.publish(current)

    remaining = {g.id for g in store.generations("dadi")}
    assert remaining == {current, previous, still_running, failed_newer}
    assert count_pages(store.engine, oldest) == 0
    assert count_pages(store.engine, still_running) == CONFIG.pages
    previous_book = store.generation(previous)
    assert_whole(previous_book)  # the previous book is kept whole
    assert store.book("paatti") is not None
    assert store.generation(other_story).status == "complete"  # other stories untouched

    # The running one started from an older book: publishing it would undo two books.
    with pytest.raises(GenerationConflictError):
        store.publish(still_running)
    assert store.book("dadi").generation_id == current  # type: ignore[union-attr]


# Connecting


def test_sqlite_store_creates_its_folder_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "stories.db"
    with StoryStore.open(f"sqlite:///{path}", migrate=True) as store:
        assert path.exists()
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:secret@db.test/stories",
        "postgres://user:secret@db.test/stories",
        "postgresql+psycopg2://user:secret@db.test/stories",
    ],
)
def test_postgres_urls_use_psycopg_3(url: str) -> None:
    store = StoryStore(url)  # connects lazily: no server needed
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert store.url == "postgresql+psycopg://user:***@db.test/stories"
    finally:
        store.close()


def test_concurrent_writers_lose_nothing(store: StoryStore) -> None:
    """Images and narration save into one generation at once, as the two child flows do."""
    store.add_story(life_story())
    generation_id = store.start_generation("dadi", CONFIG, prompt_version="v1")
    rounds = 20
    failures: list[BaseException] = []

    def work(language: Language) -> None:
        try:
            for _ in range(rounds):
                store.add_usage(generation_id, [Usage(provider="shared", characters=1)])
                store.save_chapters(generation_id, language, chapters(generation_id, language))
                store.save_illustrations(generation_id, illustrations(generation_id))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(lang,)) for lang in ("hi-IN", "ta-IN")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert failures == []
    book = store.generation(generation_id)
    # Every read-modify-write of the usage happened under a lock: no lost update.
    assert book.usage == [Usage(provider="shared", calls=2 * rounds, characters=2 * rounds)]
    assert sorted(book.chapters) == ["hi-IN", "ta-IN"]
    assert len(book.illustrations) == 2
