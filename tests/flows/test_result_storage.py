"""Prefect's result storage stays bounded (issue 11, item 5): a picture's or speech's bytes
are held once, for `result_days`; what lasts are small kept results naming the book's
stored files, so a rerun of a kept book pays nothing however old its payloads, and
`cache prune` removes what no kept generation needs.

The whole `story` flow on the real clients against the loopback fakes, each test with a
result storage of its own (the session's is shared by every test of this process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.settings import (
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_TASKS_REFRESH_CACHE,
    temporary_settings,
)

from flows.story import story
from storyloom import services
from storyloom.media.base import content_tag, image_public_id_for, tag_of
from storyloom.models import CreativeStory, GenerationConfig, LifeStory
from storyloom.prompts import PROMPT_VERSION
from storyloom.providers.base import Picture, Speech
from storyloom.settings import get_settings
from tasks.cache import prune
from tasks.illustrations import KeptPicture
from tasks.media import reuse_media, store_media
from tasks.narration import KeptChapter
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

BOOK: dict[str, Any] = {"pages": 4, "narration_languages": ["en-IN"]}


@pytest.fixture
def results(tmp_path: Path) -> Iterator[Path]:
    """A result storage folder for this test alone."""
    folder = tmp_path / "results"
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: folder}):
        yield folder


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def held(folder: Path) -> dict[str, Any]:
    """Every result the storage holds by file, read the way a cache hit reads it."""
    return {name: record.result for name, record in _records(folder).items()}


def payloads(folder: Path) -> list[str]:
    """The SHA-256 of every picture and piece of speech held in the storage."""
    found = []
    for result in held(folder).values():
        if isinstance(result, Picture):
            found.append(hashlib.sha256(result.data).hexdigest())
        elif isinstance(result, Speech):
            found.append(hashlib.sha256(result.wav).hexdigest())
    return found


def kept(folder: Path) -> list[KeptPicture | KeptChapter]:
    return [r for r in held(folder).values() if isinstance(r, KeptPicture | KeptChapter)]


def calls(fakes: Fakes) -> list[int]:
    """Requests so far to Gemini, Sarvam and Cloudinary: paid calls and uploads."""
    return [len(fake.calls) for fake in fakes.all]


def again(story_id: str) -> None:
    """The story run again with the same input, the cache read (not refreshed)."""
    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=story_id, **BOOK)


def used_tags(story_id: str) -> set[str]:
    book = services.store().book(story_id)
    assert book is not None
    public_ids = [i.public_id for i in book.illustrations]
    public_ids += [c.public_id for cs in book.chapters.values() for c in cs]
    return {tag_of(public_id) for public_id in public_ids}


def test_a_rerun_holds_no_picture_or_speech_twice_and_writes_nothing(
    life_story: LifeStory, fakes: Fakes, results: Path
) -> None:
    story(story_id=life_story.id, **BOOK)
    first = files(results)
    drawn = payloads(results)
    book = services.store().book(life_story.id)
    assert book is not None
    chapters = len(book.chapters["en-IN"])
    # Each picture and each piece of speech is held once, for result_days, and what is
    # kept for good names the stored file by its tag, without the bytes.
    assert len(drawn) == len(set(drawn)) >= len(book.illustrations) + chapters
    lasting = kept(results)
    assert {k.tag for k in lasting} == used_tags(life_story.id)
    assert all(k.data is None for k in lasting)
    kept_files = [n for n, r in held(results).items() if isinstance(r, KeptPicture | KeptChapter)]
    assert all(len(first[name]) < 2_000 for name in kept_files)

    before = calls(fakes)
    again(life_story.id)
    assert calls(fakes) == before  # no paid call, no upload
    # Not a file written: no upload answers under a new run id, no child flow results.
    assert files(results) == first


def test_a_kept_book_needs_no_payload_to_be_rerun_for_nothing(
    life_story: LifeStory, fakes: Fakes, results: Path
) -> None:
    story(story_id=life_story.id, **BOOK)
    written = datetime.now(UTC)
    days = timedelta(days=get_settings().result_days)
    records = _records(results).values()
    expiries = [r.metadata.expiration for r in records if isinstance(r.result, Picture | Speech)]
    assert expiries
    assert all(written - timedelta(minutes=10) + days < e <= written + days for e in expiries)

    # Past result_days every payload goes; the kept results and the text answers stay.
    pruned = prune(now=written + days + timedelta(minutes=1))
    assert {r.kind for r in pruned.removed} == {"payload"}
    assert {r.why for r in pruned.removed} == {"expired"}
    assert payloads(results) == []
    assert set(pruned.left.kinds) == {"kept", "paid"}

    before = calls(fakes)
    again(life_story.id)
    assert calls(fakes) == before  # nothing paid, nothing uploaded: the files are there
    book = services.store().book(life_story.id)
    assert book is not None
    assert all(u.calls == 0 for u in book.usage)
    assert payloads(results) == []  # and nothing drawn or spoken again to hold


def test_prune_removes_what_no_kept_generation_needs(
    life_story: LifeStory, creative_story: CreativeStory, fakes: Fakes, results: Path
) -> None:
    other = creative_story
    story(story_id=life_story.id, **BOOK)
    story(story_id=other.id, **BOOK)
    mine, theirs = used_tags(life_story.id), used_tags(other.id)
    assert mine
    assert theirs
    assert not mine & theirs
    assert {k.tag for k in kept(results)} == mine | theirs

    # Nothing goes while every kept result names a file a generation uses.
    assert prune(dry_run=True).removed == []

    # The other story is deleted (its rows and files): its kept results name files no
    # generation uses any more. A dry run says so and removes nothing.
    services.media().delete_story(other.id)
    services.store().delete_story(other.id)
    size = len(files(results))
    dry = prune(dry_run=True)
    assert len(dry.removed) == len(theirs)
    assert {r.why for r in dry.removed} == {"no generation uses its file"}
    assert len(files(results)) == size

    later = datetime.now(UTC) + timedelta(days=get_settings().result_days, minutes=1)
    pruned = prune(now=later)
    gone = [r for r in pruned.removed if r.kind == "kept"]
    assert len(gone) == len(theirs)
    assert pruned.freed == sum(r.size for r in pruned.removed) > 0
    assert {k.tag for k in kept(results)} == mine
    assert payloads(results) == []

    # What the kept book needs stayed: running it again pays for nothing.
    before = calls(fakes)
    again(life_story.id)
    assert calls(fakes) == before
    assert prune(now=later).removed == []


def test_a_kept_result_whose_file_went_is_made_again_from_its_payload(
    life_story: LifeStory, fakes: Fakes, results: Path
) -> None:
    story(story_id=life_story.id, **BOOK)
    tags = used_tags(life_story.id)
    # The story and every file of it go; its kept results stay until a prune.
    services.media().delete_story(life_story.id)
    services.store().delete_story(life_story.id)
    services.store().add_story(life_story)

    paid = calls(fakes)[:2]
    uploads = len(fakes.cloudinary.calls_to("/upload"))
    again(life_story.id)
    # Within result_days the bytes come from the payloads: nothing paid, the files
    # uploaded again under the same public ids.
    assert calls(fakes)[:2] == paid
    assert len(fakes.cloudinary.calls_to("/upload")) - uploads == len(tags)
    assert used_tags(life_story.id) == tags

    # Past them, with no file and no payload left, the pictures and chapters are paid
    # for again: what a kept result alone cannot give.
    services.media().delete_story(life_story.id)
    services.store().delete_story(life_story.id)
    services.store().add_story(life_story)
    prune(now=datetime.now(UTC) + timedelta(days=get_settings().result_days, minutes=1))
    assert kept(results) == []
    image_model = services.providers().illustrator.name.split(":")[-1]
    drawn = len(fakes.gemini_calls(image_model))
    spoken = len(fakes.sarvam.calls_to("/text-to-speech"))
    again(life_story.id)
    book = services.store().book(life_story.id)
    assert book is not None
    assert len(fakes.gemini_calls(image_model)) - drawn == len(book.illustrations)
    assert len(fakes.sarvam.calls_to("/text-to-speech")) - spoken >= len(book.chapters["en-IN"])


def test_a_kept_picture_on_another_page_is_copied_from_its_file(life_story: LifeStory) -> None:
    store = services.store()
    config = GenerationConfig(pages=4)
    picture = b"\x89PNG\r\n\x1a\n" + b"a picture" * 50
    tag = content_tag(picture)
    first = store.start_generation(life_story.id, config, prompt_version=PROMPT_VERSION)
    on_three = image_public_id_for(life_story.id, 3, tag)
    store_media.fn(first, on_three, picture, "image", "png", "local")
    second = store.start_generation(life_story.id, config, prompt_version=PROMPT_VERSION)
    on_four = image_public_id_for(life_story.id, 4, tag)

    assert reuse_media.fn(second, on_four, [], "image", "png", "local") is None
    copied = reuse_media.fn(second, on_four, [on_three], "image", "png", "local")
    assert copied is not None
    assert copied.public_id == on_four
    assert services.media().read(on_four, kind="image", extension="png") == picture
    assert on_four in store.media_of(second)
    # The same file again is the same file: no copy.
    assert reuse_media.fn(second, on_three, [], "image", "png", "local") is not None


def _records(folder: Path) -> dict[str, Any]:
    reader = ResultStore(result_storage=LocalFileSystem(basepath=str(folder)))
    return {name: reader.read(name) for name in sorted(files(folder))}
