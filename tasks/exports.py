"""The task that renders a generation's book files (reader page, EPUBs, PDF)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storyloom import services
from storyloom.exports import BookFile, BookSource, media_reader, render
from storyloom.media.base import MediaKind
from storyloom.models import ExportFormat
from tasks.policy import api_slot, honour_retry_after


@task(name="render-book-files", cache_policy=NO_CACHE, persist_result=False, retries=1)
def render_book_files(generation_id: str, formats: list[ExportFormat]) -> list[BookFile]:
    """Render the generation's book as files, reading its pictures and chapters back
    from the media store. No provider is called; nothing is cached or persisted (the
    files are stored as media, named by their bytes)."""
    book = services.store().generation(generation_id)
    media = services.media()

    def read(public_id: str, kind: MediaKind, extension: str) -> bytes:
        # A download is a call to the media API like an upload: it takes a slot.
        with honour_retry_after(), api_slot("media", media.name):
            return media.read(public_id, kind=kind, extension=extension)

    return render(BookSource(book, media_reader(book, read)), formats)
