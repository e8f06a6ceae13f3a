"""The book as files: a self-contained HTML reader, EPUB 3 with media overlays, a PDF.

Pure renderers: each takes a `BookSource` (a generation's book and a way to read its
media files' bytes) and returns the file's bytes. No provider is called; the same book
always renders to the same bytes, so an unchanged book stores no new file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from storyloom.media.base import MediaKind, MediaStore
from storyloom.models import EXPORT_FORMATS, AudioChapter, ExportFormat, Illustration, Language
from storyloom.store.records import StoryBook


@dataclass(frozen=True)
class BookSource:
    """What a renderer needs: the book, and the bytes of a media file by its URL."""

    book: StoryBook
    read: Callable[[str], bytes]  # a media file's stored URL -> its bytes

    @property
    def title(self) -> str:
        return self.book.story.title

    @property
    def languages(self) -> list[Language]:
        """The narration languages with chapters, in the config's order."""
        order = self.book.config.narration_languages or []
        have = [lang for lang in order if self.book.chapters.get(lang)]
        return have + sorted(set(self.book.chapters) - set(have))

    def chapters(self, language: Language) -> list[AudioChapter]:
        return sorted(self.book.chapters.get(language, []), key=lambda c: c.position)

    def illustrations_on(self, page_number: int) -> list[Illustration]:
        return [i for i in self.book.illustrations if i.page_number == page_number]


# Bumped when a renderer changes what it writes: every book is rendered again.
RENDER_VERSION = "2026-12-01.1"


def book_digest(book: StoryBook, formats: Sequence[ExportFormat]) -> str:
    """A digest of everything the files are rendered from: the story's title and
    language, the pages, the pictures and chapters (by their files, named by their
    bytes) with their sentence timings, the formats, and the renderers' version."""
    content = {
        "version": RENDER_VERSION,
        "formats": sorted(set(formats)),
        "title": book.story.title,
        "language": book.story.language,
        "narration": book.config.narration_languages,
        "pages": [p.model_dump(mode="json") for p in book.pages],
        "pictures": [
            [i.position, i.page_number, i.public_id, i.prompt] for i in book.illustrations
        ],
        "chapters": {
            lang: [c.model_dump(mode="json", exclude={"url", "version"}) for c in chapters]
            for lang, chapters in sorted(book.chapters.items())
        },
    }
    encoded = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


EXTENSIONS: dict[ExportFormat, str] = {"html": "html", "epub": "epub", "pdf": "pdf"}


@dataclass(frozen=True)
class BookFile:
    """One rendered file of the book."""

    format: ExportFormat
    language: Language | None  # an EPUB's narration language
    data: bytes

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    def file_name(self, story_id: str) -> str:
        """`{story}.html`, `{story}-hi-IN.epub`, `{story}.pdf`: the name on disk."""
        suffix = f"-{self.language}" if self.language else ""
        return f"{story_id}{suffix}.{self.extension}"


MediaRead = Callable[[str, MediaKind, str], bytes]  # (public id, kind, extension) -> bytes


def media_reader(book: StoryBook, read_media: MediaRead) -> Callable[[str], bytes]:
    """read(url) for a renderer: the bytes of the book's picture or chapter at that URL,
    through read_media (a media store's read, or one that takes an API slot first)."""
    known: dict[str, tuple[str, MediaKind]] = {
        i.url: (i.public_id, "image") for i in book.illustrations
    } | {c.url: (c.public_id, "audio") for cs in book.chapters.values() for c in cs}

    def read(url: str) -> bytes:
        if url not in known:
            raise KeyError(f"not a file of this book: {url}")
        public_id, kind = known[url]
        suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".")
        # Pictures are stored as PNG, though a delivery URL may not say so (f_auto).
        extension = "png" if kind == "image" else suffix or "mp3"
        return read_media(public_id, kind, extension)

    return read


def store_reader(media: MediaStore) -> MediaRead:
    """A media store's read, as media_reader takes it."""
    return lambda public_id, kind, extension: media.read(
        public_id, kind=kind, extension=extension
    )


def render(source: BookSource, formats: Sequence[ExportFormat]) -> list[BookFile]:
    """The book's files in the given formats: one reader page (every language), one EPUB
    per narration language (one without narration when there is none), one PDF."""
    from storyloom.exports.epub import render_epub
    from storyloom.exports.html import render_html
    from storyloom.exports.pdf import render_pdf

    files: list[BookFile] = []
    for fmt in dict.fromkeys(formats):
        if fmt == "html":
            files.append(BookFile("html", None, render_html(source)))
        elif fmt == "epub":
            languages: list[Language | None] = [*source.languages] or [None]
            files += [BookFile("epub", lang, render_epub(source, lang)) for lang in languages]
        elif fmt == "pdf":
            files.append(BookFile("pdf", None, render_pdf(source)))
        else:
            raise ValueError(f"unknown format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")
    return files
