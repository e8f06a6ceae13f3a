"""The book as files: a self-contained HTML reader, EPUB 3 with media overlays, a PDF.

Pure renderers: each takes a `BookSource` (a generation's book and a way to read its
media files' bytes) and returns the file's bytes. No provider is called; the same book
always renders to the same bytes, so an unchanged book stores no new file.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


# Files of one book read side by side before rendering: the media API's slots decide how
# many are really in flight (tasks/policy.api_slot).
READ_WORKERS = 8


class MediaReader:
    """read(url) for a renderer: the bytes of the book's picture or chapter at that URL,
    through read_media (a media store's read, or one that takes an API slot first).

    Each file is read once, however many renderers embed it (the reader page, every
    EPUB and the PDF share pictures; the page and the EPUBs share chapters), and
    `prefetch` reads the files a set of formats needs side by side. Before, a book of
    8 pictures and 30 chapters made 92 reads one after another (docs/performance.md).
    """

    def __init__(self, book: StoryBook, read_media: MediaRead) -> None:
        self._read_media = read_media
        self._known: dict[str, tuple[str, MediaKind]] = {
            i.url: (i.public_id, "image") for i in book.illustrations
        } | {c.url: (c.public_id, "audio") for cs in book.chapters.values() for c in cs}
        self._read: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bytes:
        with self._lock:
            if url in self._read:
                return self._read[url]
        data = self._fetch(url)
        with self._lock:
            self._read[url] = data
        return data

    def _fetch(self, url: str) -> bytes:
        if url not in self._known:
            raise KeyError(f"not a file of this book: {url}")
        public_id, kind = self._known[url]
        suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".")
        # Pictures are stored as PNG, though a delivery URL may not say so (f_auto).
        extension = "png" if kind == "image" else suffix or "mp3"
        return self._read_media(public_id, kind, extension)

    def prefetch(self, formats: Sequence[ExportFormat], workers: int = READ_WORKERS) -> None:
        """Read what the formats embed, side by side: the pictures for any format, the
        chapters too for the reader page and the EPUBs. The first error is raised."""
        wanted = {"image"} if formats else set()
        if {"html", "epub"} & set(formats):
            wanted.add("audio")
        urls = [url for url, (_, kind) in self._known.items() if kind in wanted]
        if len(urls) < 2:
            return
        # Each read runs in a copy of the caller's context (a task run's, so its API slot
        # names the task and its cancellation check finds the run).
        contexts = [contextvars.copy_context() for _ in urls]
        with ThreadPoolExecutor(min(workers, len(urls)), "book-media") as pool:
            found = pool.map(lambda ctx, url: ctx.run(self._fetch, url), contexts, urls)
            for url, data in zip(urls, found, strict=True):
                with self._lock:
                    self._read[url] = data


def media_reader(book: StoryBook, read_media: MediaRead) -> MediaReader:
    """The book's media reader (see MediaReader)."""
    return MediaReader(book, read_media)


def store_reader(media: MediaStore) -> MediaRead:
    """A media store's read, as media_reader takes it."""
    return lambda public_id, kind, extension: media.read(public_id, kind=kind, extension=extension)


def render(source: BookSource, formats: Sequence[ExportFormat]) -> list[BookFile]:
    """The book's files in the given formats: one reader page (every language), one EPUB
    per narration language (one without narration when there is none), one PDF."""
    from storyloom.exports.epub import render_epub
    from storyloom.exports.html import render_html
    from storyloom.exports.pdf import render_pdf

    if isinstance(source.read, MediaReader):
        source.read.prefetch(formats)
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
