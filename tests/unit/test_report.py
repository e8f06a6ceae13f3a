"""The markdown of the run artifacts (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from storyloom.models import AudioChapter, GenerationConfig, Illustration, Page, Usage, parse_story
from storyloom.report import (
    MAX_PICTURES_SHOWN,
    book_markdown,
    illustrations_markdown,
    narration_markdown,
)
from storyloom.store.records import StoryBook

STORY = parse_story(
    '{"id": "s", "kind": "creative", "title": "The Lantern", "language": "hi-IN", '
    '"premise": "A girl keeps the lanterns."}'
)


def picture(page: int, position: int) -> Illustration:
    return Illustration(
        position=position, page_number=page, prompt=f"scene {page}",
        public_id=f"stories/s/images/page-{page:02d}", url=f"https://cdn/p{page}.png",
        thumbnail_url=f"https://cdn/t{page}.png", width=1024, height=768,
    )  # fmt: skip


def chapter(position: int, seconds: float) -> AudioChapter:
    return AudioChapter(
        language="hi-IN", position=position, title=f"अध्याय {position}", text="...",
        first_page=position, duration_seconds=seconds,
        public_id=f"stories/s/audio/hi-IN/chapter-{position:02d}", url=f"https://cdn/c{position}",
    )  # fmt: skip


def book(pages: int) -> StoryBook:
    now = datetime.now(UTC)
    return StoryBook(
        story=STORY, generation_id="g", status="complete",
        config=GenerationConfig(pages=pages), prompt_version="v", flow_run_id=None,
        error=None,
        pages=[Page(number=n, text=f"Text of page {n}.", words=4) for n in range(1, pages + 1)],
        illustrations=[picture(n, n) for n in range(1, pages + 1)],
        chapters={"hi-IN": [chapter(1, 61.4), chapter(2, 58.0)]},
        banner_url="https://cdn/p1.png", thumbnail_url="https://cdn/t1.png",
        usage=[Usage(provider="gemini-text", calls=9, input_tokens=4000, output_tokens=800)],
        created_at=now, finished_at=now,
    )  # fmt: skip


def test_the_book_has_every_page_its_banner_chapters_and_cost() -> None:
    text = book_markdown(book(4), image_src=lambda url: f"shown:{url}")
    assert text.startswith("# The Lantern")
    assert "![Banner](shown:https://cdn/p1.png)" in text
    assert [f"## Page {n} (4 words)" in text for n in range(1, 5)] == [True] * 4
    assert "![Page 3](shown:https://cdn/t3.png)" in text
    assert "**4 pages**, 16 words, 4 illustrations, 2 audio chapters (1:59)" in text
    assert "| 1 | अध्याय 1 | 1 | 61.4 s |" in text
    assert "| gemini-text | 9 | 4000 | 800 | 0 |" in text


def test_a_long_book_shows_only_so_many_pictures() -> None:
    shown: list[str] = []

    def source(url: str) -> str:
        shown.append(url)
        return url

    text = book_markdown(book(30), image_src=source)
    assert len(shown) == 1 + MAX_PICTURES_SHOWN  # the banner and the first pictures
    assert "Picture: `stories/s/images/page-30`" in text
    assert "## Page 30" in text


def test_illustrations_name_the_banner_and_the_failed_pages() -> None:
    text = illustrations_markdown("The Lantern", [picture(2, 1), picture(3, 2)], [1])
    assert "### Banner and thumbnail (page 2, 1024x768)" in text
    assert "![Banner and thumbnail](https://cdn/p2.png)" in text
    assert "![Page 3](https://cdn/t3.png)" in text
    assert "**Failed and skipped:** pages 1" in text


def test_narration_totals_per_language() -> None:
    text = narration_markdown("The Lantern", {"hi-IN": [chapter(1, 61.4), chapter(2, 58.0)]})
    assert "## hi-IN: 2 chapters, 1:59" in text
    assert "[stories/s/audio/hi-IN/chapter-02](https://cdn/c2)" in text
