"""A generation owns its media: compare-and-swap publishing, files shared only when their
bytes are, and the files of pruned, failed and cancelled generations deleted."""

from __future__ import annotations

import pytest

from storyloom.media.base import MediaKind, StoredMedia, image_public_id
from storyloom.models import GenerationConfig, Illustration, LifeStage, LifeStory, Page
from storyloom.store.repository import (
    GenerationConflictError,
    GenerationStateError,
    StoryStore,
)

CONFIG = GenerationConfig(pages=2, image_count=1, narration_languages=[])
STORY = LifeStory(
    id="nani", kind="life", title="Nani", language="en-IN",
    stages={LifeStage.CHILDHOOD: ["She climbed the neem tree."]},
)  # fmt: skip


def stored(picture: bytes) -> StoredMedia:
    public_id = image_public_id(STORY.id, 1, picture)
    return StoredMedia(public_id, f"https://media.test/{public_id}.png", "v1", len(picture))


def start(store: StoryStore, **kwargs: object) -> str:
    return store.start_generation(STORY.id, CONFIG, prompt_version="p1", **kwargs)  # type: ignore[arg-type]


def book(store: StoryStore, generation_id: str, picture: bytes) -> StoredMedia:
    """Pages and one stored picture in the generation, as a run writes them."""
    store.save_pages(generation_id, [Page(number=n, text=f"{generation_id} {n}", words=2)
                                     for n in (1, 2)])  # fmt: skip
    media = store.reuse_media(generation_id, stored(picture).public_id)
    if media is None:
        media = stored(picture)
        store.record_media(generation_id, media, "image")
    store.save_illustrations(
        generation_id,
        [Illustration(position=1, page_number=1, prompt="p", public_id=media.public_id,
                      url=media.url, thumbnail_url=media.url, width=1, height=1)],
    )  # fmt: skip
    return media


class Deleted:
    """The media store's side of a sweep: what it was asked to delete."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, public_id: str, kind: MediaKind) -> None:
        self.ids.append(public_id)


@pytest.fixture
def with_story(store: StoryStore) -> StoryStore:
    store.add_story(STORY)
    return store


def test_public_ids_are_named_by_their_bytes() -> None:
    assert image_public_id("nani", 3, b"a") == image_public_id("nani", 3, b"a")
    assert image_public_id("nani", 3, b"a") != image_public_id("nani", 3, b"b")
    assert image_public_id("nani", 3, b"a").startswith("stories/nani/images/page-03-")


def test_publish_refuses_a_generation_whose_base_was_replaced(with_story: StoryStore) -> None:
    store = with_story
    first = start(store)
    book(store, first, b"one")
    store.publish(first)
    story_run, narration_run = start(store), start(store, copy_from_current=["pages"])
    assert store.generations(STORY.id)[0].base_generation_id == first
    book(store, narration_run, b"two")
    store.publish(narration_run)
    book(store, story_run, b"three")
    with pytest.raises(GenerationConflictError, match="got a new book"):
        store.publish(story_run)
    assert store.book(STORY.id).generation_id == narration_run  # type: ignore[union-attr]
    # The loser is still running: its run marks it failed and nothing is lost silently.
    store.fail(story_run, "conflict")
    assert {g.id: g.status for g in store.generations(STORY.id)}[story_run] == "failed"


def test_identical_bytes_are_one_file_shared_by_generations(with_story: StoryStore) -> None:
    store = with_story
    first = start(store)
    published = book(store, first, b"same")
    store.publish(first)
    second = start(store)
    assert store.reuse_media(second, published.public_id) == published
    assert store.media_of(second) == [published.public_id]
    # The second fails: the shared file stays, the published book uses it.
    store.fail(second, "boom")
    deleted = Deleted()
    assert store.delete_orphaned_media(STORY.id, deleted) == []
    assert store.media_of(first) == [published.public_id]


def test_a_failed_generation_loses_only_its_own_files(with_story: StoryStore) -> None:
    store = with_story
    first = start(store)
    published = book(store, first, b"old")
    store.publish(first)
    second = start(store)
    own = book(store, second, b"new")
    assert own.public_id != published.public_id
    store.fail(second, "late failure")
    deleted = Deleted()
    assert store.delete_orphaned_media(STORY.id, deleted) == [own.public_id]
    assert deleted.ids == [own.public_id]
    assert store.delete_orphaned_media(STORY.id, Deleted()) == []  # nothing twice


def test_a_cancelled_generation_is_recorded_as_cancelled(with_story: StoryStore) -> None:
    store = with_story
    generation = start(store)
    own = book(store, generation, b"x")
    store.cancel(generation, "cancelled by the user")
    info = store.latest_generation(STORY.id)
    assert info is not None
    assert (info.status, info.error) == ("cancelled", "cancelled by the user")
    assert store.delete_orphaned_media(STORY.id, Deleted()) == [own.public_id]


def test_pruned_generations_free_their_files(with_story: StoryStore) -> None:
    store = with_story
    files = []
    for picture in (b"1", b"2", b"3"):
        generation = start(store)
        files.append(book(store, generation, picture).public_id)
        store.publish(generation)
    # The current book and the one before it are kept; the first is pruned.
    assert store.delete_orphaned_media(STORY.id, Deleted()) == [files[0]]


def test_copied_outputs_keep_their_files(with_story: StoryStore) -> None:
    store = with_story
    first = start(store)
    published = book(store, first, b"pic")
    store.publish(first)
    for _ in range(3):  # narration-only runs that copy the pictures; the first is pruned
        redo = start(store, copy_from_current=["pages", "illustrations"])
        assert store.media_of(redo) == [published.public_id]
        store.publish(redo)
    assert store.delete_orphaned_media(STORY.id, Deleted()) == []


def test_a_file_stored_after_its_generation_ended_goes_with_the_sweep(
    with_story: StoryStore,
) -> None:
    store = with_story
    generation = start(store)
    store.cancel(generation, "cancelled")
    late = stored(b"late")
    with pytest.raises(GenerationStateError, match="goes with the next sweep"):
        store.record_media(generation, late, "image")
    assert store.delete_orphaned_media(STORY.id, Deleted()) == [late.public_id]


def test_a_sweep_that_fails_keeps_the_record(with_story: StoryStore) -> None:
    store = with_story
    generation = start(store)
    own = book(store, generation, b"x")
    store.fail(generation, "boom")

    def unreachable(public_id: str, kind: MediaKind) -> None:
        raise ConnectionError("media store down")

    with pytest.raises(ConnectionError):
        store.delete_orphaned_media(STORY.id, unreachable)
    assert store.delete_orphaned_media(STORY.id, Deleted()) == [own.public_id]


def test_a_dead_runs_generation_can_be_adopted(with_story: StoryStore) -> None:
    store = with_story
    generation = start(store, flow_run_id="run-1")
    store.adopt_generation(generation, "run-2")
    assert store.generations(STORY.id)[0].flow_run_id == "run-2"
    store.fail(generation, "x")
    with pytest.raises(GenerationStateError):
        store.adopt_generation(generation, "run-3")
