"""The book's files (reader page, EPUB per language, PDF): built when a generation is
published, stored with it in Cloudinary (the fake, on the real SDK), the same bytes as
`storyloom export`, reused when nothing changed, never in the way of publishing."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from typer.testing import CliRunner

from flows.story import story
from storyloom import services
from storyloom.cli import app
from storyloom.models import LifeStory
from tests.fakes.server import Fault
from tests.fakes.stack import Fakes

pytestmark = pytest.mark.flows

BOOK = {"pages": 4, "narration_languages": ["en-IN", "hi-IN"]}


@pytest.fixture(autouse=True)
def book_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYLOOM_EXPORTS", '["html", "epub", "pdf"]')
    services.reset()


def test_a_published_book_has_its_files(
    life_story: LifeStory, fakes: Fakes, tmp_path: Path
) -> None:
    story(story_id=life_story.id, **BOOK)

    book = services.store().book(life_story.id)
    assert book is not None
    kinds = sorted((e.format, e.language or "") for e in book.exports)
    assert kinds == [("epub", "en-IN"), ("epub", "hi-IN"), ("html", ""), ("pdf", "")]
    stored = {}
    for export in book.exports:
        assert export.public_id.startswith(f"stories/{life_story.id}/books/")
        asset = fakes.cloudinary.asset("raw", export.public_id)
        assert asset is not None, export.public_id
        assert export.bytes == len(asset.data)
        assert export.url.startswith("https://res.cloudinary.com/demo/raw/upload/")
        stored[(export.format, export.language)] = asset.data
    # Files of the generation: they go when it goes.
    assert {e.public_id for e in book.exports} <= set(
        services.store().media_of(book.generation_id)
    )

    html = stored[("html", None)].decode()
    assert book.story.title in html
    assert "http://" not in html
    assert html.count('class="sentence"') >= sum(
        len(c.sentences) for cs in book.chapters.values() for c in cs
    )
    with zipfile.ZipFile(io.BytesIO(stored[("epub", "hi-IN")])) as epub:
        smil = [n for n in epub.namelist() if n.endswith(".smil")]
        assert len(smil) == len(book.chapters["hi-IN"])
    assert stored[("pdf", None)][:5] == b"%PDF-"

    # `storyloom export` renders the same bytes from the stored book (reading its
    # pictures and audio back through Cloudinary's download API).
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", life_story.id, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / f"{life_story.id}.html").read_bytes() == stored[("html", None)]
    assert (out / f"{life_story.id}-hi-IN.epub").read_bytes() == stored[("epub", "hi-IN")]
    assert (out / f"{life_story.id}.pdf").read_bytes() == stored[("pdf", None)]
    assert str(out / f"{life_story.id}.html") in result.output


def test_an_unchanged_book_reuses_its_files(life_story: LifeStory, fakes: Fakes) -> None:
    story(story_id=life_story.id, **BOOK)
    first = services.store().book(life_story.id)
    assert first is not None
    calls = len(fakes.cloudinary.calls)

    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: False}):
        story(story_id=life_story.id, **BOOK)

    again = services.store().book(life_story.id)
    assert again is not None
    assert again.generation_id != first.generation_id
    assert again.exports == first.exports
    assert len(fakes.cloudinary.calls) == calls  # nothing downloaded, rendered or stored


def test_files_that_cannot_be_made_do_not_stop_the_book(
    life_story: LifeStory, fakes: Fakes
) -> None:
    # Cloudinary cannot hand the pictures and audio back: the files cannot be rendered.
    fakes.cloudinary.schedule(*[Fault(status=500, path_contains="/download")] * 50)

    story(story_id=life_story.id, **BOOK)

    book = services.store().book(life_story.id)
    assert book is not None  # published with its pages, pictures and narration
    assert book.exports == []
    assert set(book.chapters) == {"en-IN", "hi-IN"}
    assert fakes.cloudinary.calls_to("/download")
