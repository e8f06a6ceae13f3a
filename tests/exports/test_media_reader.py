"""Rendering a book's files reads each of its media files once, side by side: the media
API is a remote store with a latency per read, and the page, the EPUBs and the PDF all
embed the same pictures and chapters."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from storyloom.exports import BookSource, media_reader, render
from storyloom.media.base import MediaKind
from tests.exports.books import book


class Store:
    """A media store's read, counting reads; the first two must overlap (a barrier that
    breaks after a while when they come one after another)."""

    def __init__(self, files: dict[str, bytes], overlapping: int = 2) -> None:
        self.by_id = {
            url.split("/media/", 1)[1].rsplit(".", 1)[0]: data for url, data in files.items()
        }
        self.reads: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(overlapping, timeout=20)

    def read(self, public_id: str, kind: MediaKind, extension: str) -> bytes:
        with self.lock:
            self.reads[public_id] += 1
            first = sum(self.reads.values()) <= self.barrier.parties
        if first:
            self.barrier.wait()  # BrokenBarrierError when reads do not overlap
        return self.by_id[public_id]


def test_each_file_is_read_once_for_every_format_and_side_by_side() -> None:
    source, files = book("en-IN", ("en-IN", "hi-IN"))
    store = Store(files)
    reader = media_reader(source.book, store.read)

    rendered = render(BookSource(source.book, reader), ["html", "epub", "pdf"])

    assert [f.format for f in rendered] == ["html", "epub", "epub", "pdf"]
    # Two pictures and three chapters in each of two languages, each read once.
    assert len(store.reads) == 2 + 3 * 2
    assert set(store.reads.values()) == {1}, store.reads


def test_a_pdf_alone_reads_the_pictures_only() -> None:
    source, files = book("en-IN", ("en-IN",))
    store = Store(files)
    render(BookSource(source.book, media_reader(source.book, store.read)), ["pdf"])
    assert sorted(store.reads) == [
        "stories/lantern-keeper/images/page-01",
        "stories/lantern-keeper/images/page-03",
    ]


def test_a_file_the_store_lacks_fails_the_render() -> None:
    source, files = book("en-IN", ("en-IN",))
    store = Store(files, overlapping=1)
    missing = next(url for url in files if url.endswith("chapter-02.mp3"))
    del store.by_id[missing.split("/media/", 1)[1].rsplit(".", 1)[0]]
    with pytest.raises(KeyError):
        render(BookSource(source.book, media_reader(source.book, store.read)), ["epub"])
