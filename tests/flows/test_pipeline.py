"""The whole pipeline, offline, under a real (test) Prefect server."""

from __future__ import annotations

import asyncio
import io
import itertools
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
import soundfile
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.illustrations import illustrations
from flows.narration import narration
from flows.story import story
from storyloom import services
from storyloom.audio import measure
from storyloom.models import CreativeStory, LifeStory
from storyloom.settings import get_settings
from tests.fakes.server import Fault
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows


def local_path(url: str) -> Path:
    """The file behind a local media URL (file://...?v=...)."""
    return Path(url2pathname(urlparse(url).path))


def test_life_story_end_to_end(life_story: LifeStory) -> None:
    result = story(story_id=life_story.id, pages=8, narration_languages=["en-IN", "hi-IN"])

    book = services.store().book(life_story.id)
    assert book is not None
    assert book.generation_id == result.generation_id
    assert book.status == "complete"

    # Exactly the pages asked for, each within 15% of words_per_page.
    assert [p.number for p in book.pages] == list(range(1, 9))
    for page in book.pages:
        assert 250 * 0.85 <= page.words <= 250 * 1.15, (page.number, page.words)
    assert "offline writer" in book.pages[0].text

    # One illustration a page, in the Cloudinary layout; the first is the banner.
    media = get_settings().media_dir.resolve()
    assert [i.page_number for i in book.illustrations] == list(range(1, 9))
    assert [i.position for i in book.illustrations] == list(range(1, 9))
    for item in book.illustrations:
        path = local_path(item.url)
        folder = media / "stories" / life_story.id / "images"
        assert path.parent == folder
        assert path.name == f"{item.public_id.rsplit('/', 1)[1]}.png"
        assert path.name.startswith(f"page-{item.page_number:02d}-")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert book.banner_url == book.illustrations[0].url
    assert book.thumbnail_url

    # Narration in both languages: chapters in order, durations measured from the files.
    assert set(book.chapters) == {"en-IN", "hi-IN"}
    for language, chapters in book.chapters.items():
        assert [c.position for c in chapters] == list(range(1, len(chapters) + 1))
        assert chapters[0].first_page == 1
        assert [c.first_page for c in chapters] == sorted(c.first_page for c in chapters)
        for chapter in chapters:
            path = local_path(chapter.url)
            folder = media / "stories" / life_story.id / "audio" / language
            assert path.parent == folder
            # Delivered as MP3, mono, under 0.6 MB a minute; measured on that file.
            assert path.suffix == ".mp3"
            data = path.read_bytes()
            with soundfile.SoundFile(io.BytesIO(data)) as decoded:
                assert (decoded.format, decoded.channels) == ("MP3", 1)
            measured = measure(data)
            assert chapter.duration_seconds == pytest.approx(measured, abs=0.01)
            assert 5 < chapter.duration_seconds <= 75
            assert len(data) / (measured / 60) <= 0.6e6
            # Every sentence timed: they tile the file, in order, and say the chapter.
            timings = chapter.sentences
            assert " ".join(t.text for t in timings) == chapter.text
            assert timings[0].start == 0
            assert all(a.end == b.start for a, b in itertools.pairwise(timings))
            assert all(t.end > t.start for t in timings)
            assert timings[-1].end == pytest.approx(measured, abs=0.002)
    # 2,000 words take minutes to say: more than one chapter per language.
    assert all(len(chapters) >= 3 for chapters in book.chapters.values())

    assert result.illustrations is not None
    assert result.illustrations.failed_pages == []
    assert book.usage
    assert all(u.provider == "offline" for u in book.usage)


def test_artifacts_show_progress_and_the_book(life_story: LifeStory) -> None:
    state = story(story_id=life_story.id, pages=4, narration_languages=[], return_state=True)
    run_id = state.state_details.flow_run_id
    assert run_id is not None

    async def artifacts() -> dict[str, Any]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        return {a.key: a for a in found if a.key}

    by_key = asyncio.run(artifacts())
    assert by_key[f"story-{life_story.id}-progress"].data == 100.0
    book = by_key[f"storybook-{life_story.id}"].data
    assert isinstance(book, str)
    assert "## Page 4" in book
    assert "![Banner](data:image/jpeg;base64," in book  # local files shown inline


def test_creative_story_without_images_or_narration(creative_story: CreativeStory) -> None:
    result = story(
        story_id=creative_story.id, pages=4, words_per_page=120, images=False,
        narration_languages=[],
    )  # fmt: skip
    book = services.store().book(creative_story.id)
    assert book is not None
    assert len(book.pages) == 4
    assert all(120 * 0.85 <= p.words <= 120 * 1.15 for p in book.pages)
    assert book.illustrations == []
    assert book.chapters == {}
    assert result.illustrations is None
    assert result.narration is None


def test_a_failed_image_is_skipped_and_the_next_is_the_banner(
    life_story: LifeStory, fakes: Fakes
) -> None:
    # Cloudinary refuses page 1's upload (it is stored first, alone).
    fakes.cloudinary.schedule(Fault(status=400, path_contains="/image/upload"))

    result = story(story_id=life_story.id, pages=4, narration_languages=[])

    book = services.store().book(life_story.id)
    assert book is not None
    assert book.generation_id == result.generation_id
    assert [i.page_number for i in book.illustrations] == [2, 3, 4]
    assert book.illustrations[0].position == 1
    assert book.banner_url == book.illustrations[0].url
    assert result.illustrations is not None
    assert result.illustrations.failed_pages == [1]


def test_a_failed_run_keeps_the_previous_book(life_story: LifeStory) -> None:
    first = story(story_id=life_story.id, pages=4, narration_languages=["en-IN"])
    # A narration run of its own cannot store its audio (a file stands where its
    # folder goes): its only language fails, so the run fails.
    audio = get_settings().media_dir / "stories" / life_story.id / "audio"
    (audio / "hi-IN").write_text("in the way")

    with pytest.raises(Exception, match="hi-IN"):
        narration(story_id=life_story.id, languages=["hi-IN"])

    store = services.store()
    book = store.book(life_story.id)
    assert book is not None
    assert book.generation_id == first.generation_id
    assert len(book.pages) == 4
    assert set(book.chapters) == {"en-IN"}
    assert book.narration_failures == {}
    latest = store.latest_generation(life_story.id)
    assert latest is not None
    assert latest.status == "failed"
    assert latest.error


def test_bad_config_fails_before_anything_is_started(life_story: LifeStory) -> None:
    with pytest.raises(Exception, match="image_count"):
        story(story_id=life_story.id, pages=4, image_count=9)
    assert services.store().latest_generation(life_story.id) is None


def test_children_run_on_their_own(life_story: LifeStory) -> None:
    first = story(story_id=life_story.id, pages=4, narration_languages=["en-IN"])

    redrawn = illustrations(story_id=life_story.id, image_style="minimalist", image_count=2)
    book = services.store().book(life_story.id)
    assert book is not None
    assert book.generation_id == redrawn.generation_id != first.generation_id
    assert [i.page_number for i in book.illustrations] == [1, 3]
    assert book.config.image_style == "minimalist"
    assert len(book.pages) == 4
    assert set(book.chapters) == {"en-IN"}

    more = narration(story_id=life_story.id, languages=["ta-IN"])
    book = services.store().book(life_story.id)
    assert book is not None
    assert book.generation_id == more.generation_id
    assert set(book.chapters) == {"en-IN", "ta-IN"}
    assert book.config.narration_languages == ["en-IN", "ta-IN"]
    assert [i.page_number for i in book.illustrations] == [1, 3]


def test_deleting_a_story_removes_its_rows_and_files(life_story: LifeStory) -> None:
    from typer.testing import CliRunner

    from storyloom.cli import app

    story(story_id=life_story.id, pages=4, narration_languages=["en-IN"])
    folder = get_settings().media_dir / "stories" / life_story.id
    assert any(folder.rglob("*.png"))

    result = CliRunner().invoke(app, ["stories", "delete", life_story.id, "--yes"])

    assert result.exit_code == 0, result.output
    assert not folder.exists()
    assert services.store().list_stories() == []
