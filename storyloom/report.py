"""Markdown for the run artifacts: the book's pages, its pictures and its chapters (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from storyloom.models import AudioChapter, Illustration, Language, Usage, WritingReport

if TYPE_CHECKING:
    from storyloom.store.records import StoryBook

ImageSource = Callable[[str], str]  # a stored URL -> what a browser can show


def _same(url: str) -> str:
    return url


def _seconds(total: float) -> str:
    minutes, seconds = divmod(round(total), 60)
    return f"{minutes}:{seconds:02d}"


def illustrations_markdown(
    title: str,
    items: Sequence[Illustration],
    failed_pages: Sequence[int],
    image_src: ImageSource = _same,
) -> str:
    """The illustrations of one run, the banner first and shown large."""
    lines = [f"# Illustrations: {title}", ""]
    if not items:
        lines.append("No illustrations were stored.")
    for item in items:
        label = "Banner and thumbnail" if item.is_banner else f"Page {item.page_number}"
        lines += [
            f"### {label} (page {item.page_number}, {item.width}x{item.height})",
            "",
            f"![{label}]({image_src(item.thumbnail_url if not item.is_banner else item.url)})",
            "",
            f"`{item.public_id}`: {item.prompt}",
            "",
        ]
    if failed_pages:
        pages = ", ".join(str(p) for p in failed_pages)
        lines += [f"**Failed and skipped:** pages {pages}", ""]
    return "\n".join(lines)


def narration_markdown(
    title: str,
    chapters: Mapping[Language, Sequence[AudioChapter]],
    failed: Mapping[Language, str] | None = None,
) -> str:
    """A table per language: chapter, first page, measured duration, sentences, file;
    then the languages that failed and why."""
    lines = [f"# Narration: {title}", ""]
    for language, why in (failed or {}).items():
        lines += [f"## {language}: failed", "", f"{why}", ""]
    for language, items in chapters.items():
        total = sum(c.duration_seconds for c in items)
        lines += [
            f"## {language}: {len(items)} chapters, {_seconds(total)}",
            "",
            "| # | Title | Starts on page | Duration (measured) | Sentences | Audio |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.position} | {c.title} | {c.first_page} | {c.duration_seconds:.1f} s "
            f"| {len(c.sentences)} | [{c.public_id}]({c.url}) |"
            for c in items
        ]
        lines.append("")
    return "\n".join(lines)


def usage_markdown(usage: Sequence[Usage]) -> str:
    """Calls, tokens and characters per provider."""
    if not usage:
        return ""
    lines = [
        "| Provider | Calls | Input tokens | Output tokens | Characters | Reused (saved) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {u.provider} | {u.calls} | {u.input_tokens} | {u.output_tokens} | {u.characters} "
        f"| {u.reused} |"
        for u in usage
    ]
    return "\n".join(lines)


# Pictures shown in a book's artifact: inline previews are ~20 KB each, and a 200-page
# book's artifact should stay readable in the UI. The rest are listed by address.
MAX_PICTURES_SHOWN = 24


_EXPORT_LABELS = {"html": "reader page", "epub": "EPUB", "pdf": "PDF"}


def book_markdown(book: StoryBook, image_src: ImageSource = _same) -> str:
    """The whole storybook: totals, banner, every page with its picture, chapters, cost."""
    pictures = {item.page_number: item for item in book.illustrations}
    words = sum(p.words for p in book.pages)
    seconds = sum(c.duration_seconds for cs in book.chapters.values() for c in cs)
    chapters = sum(len(cs) for cs in book.chapters.values())
    config = book.config
    lines = [f"# {book.story.title}", ""]
    if book.banner_url:
        lines += [f"![Banner]({image_src(book.banner_url)})", ""]
    lines += [
        f"**{len(book.pages)} pages**, {words} words, {len(book.illustrations)} illustrations, "
        f"{chapters} audio chapters ({_seconds(seconds)}), "
        f"tone {config.tone.value}, audience {config.audience.value}, "
        f"style {config.image_style.value}.",
        "",
    ]
    if book.exports:
        lines += ["**The book as files:** " + ", ".join(
            f"[{_EXPORT_LABELS[e.format]}{f' ({e.language})' if e.language else ''}]({e.url})"
            for e in book.exports
        ), ""]  # fmt: skip
    for page in book.pages:
        lines += [f"## Page {page.number} ({page.words} words)", ""]
        if page.number in pictures:
            item = pictures[page.number]
            if item.position <= MAX_PICTURES_SHOWN:
                lines += [f"![Page {page.number}]({image_src(item.thumbnail_url)})", ""]
            else:
                lines += [f"Picture: `{item.public_id}` ({item.url})", ""]
        lines += [page.text, ""]
    if book.chapters or book.narration_failures:
        lines.append(
            narration_markdown("chapters", book.chapters, book.narration_failures).replace(
                "# Narration: ", "# "
            )
        )
    if book.writing is not None:
        lines += [writing_markdown(book.writing), ""]
    cost = usage_markdown(book.usage)
    if cost:
        lines += ["## Cost", "", cost, ""]
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def writing_markdown(writing: WritingReport) -> str:
    """How the text was written: the outline with each section's length against its
    budget, the figures of the fact check, and what awaits the teller's approval."""
    lines = [
        "## How it was written",
        "",
        f"{writing.words} words for a target of {writing.target_words} ({writing.gap:+.1%}); "
        f"names, places, dates and numbers: precision {_share(writing.precision)}, "
        f"recall {_share(writing.recall)}.",
        "",
    ]
    if writing.length_note:
        lines += [f"**Length missed**: {writing.length_note}", ""]
    lines += [
        "| section | pages | words / target | calls | revisions | note |",
        "|---|---|---|---|---|---|",
    ]
    for s in writing.sections:
        last = s.first_page + s.pages - 1
        pages = str(s.first_page) if last == s.first_page else f"{s.first_page}-{last}"
        note = "; ".join(n for n in (s.length_miss, s.grammar_note) if n) or "ok"
        lines.append(
            f"| {s.heading} | {pages} | {s.words} / {s.target_words} | {s.calls} "
            f"| {s.revisions} | {note} |"
        )
    flags = writing.flags
    lines += ["", "**For the teller's approval**:" if flags else "Nothing to approve: "
              "every fact of the book is the teller's.", ""]  # fmt: skip
    lines += [f"- {flag}" for flag in flags]
    return "\n".join(lines)
