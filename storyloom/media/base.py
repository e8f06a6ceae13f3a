"""The media store protocol and the one folder layout every store uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import TypeAdapter, ValidationError

from storyloom.models import Language, StoryId

MediaKind = Literal["image", "audio", "file"]  # "file": the book's files (HTML, EPUB, PDF)
_STORY_ID: TypeAdapter[str] = TypeAdapter(StoryId)


def content_tag(data: bytes) -> str:
    """16 hex digits of the bytes' SHA-256: what makes a public id unique to its content."""
    return hashlib.sha256(data).hexdigest()[:16]


def tag_of(public_id: str) -> str:
    """The content tag a picture's, chapter's or book file's public id ends with."""
    return public_id.rsplit("-", 1)[-1]


def image_public_id(story_id: str, page_number: int, data: bytes) -> str:
    """`stories/{id}/images/page-03-{hash}`: the picture for page 3, named by its bytes.

    A file is never overwritten: a regeneration that draws page 3 anew stores a new
    file beside the published one, and one that draws the same bytes shares it.
    """
    return image_public_id_for(story_id, page_number, content_tag(data))


def image_public_id_for(story_id: str, page_number: int, tag: str) -> str:
    """The same, from the content tag of the bytes (for a caller that keeps the tag)."""
    return f"stories/{story_id}/images/page-{page_number:02d}-{tag}"


def audio_public_id(story_id: str, language: Language, position: int, data: bytes) -> str:
    """`stories/{id}/audio/{language}/chapter-02-{hash}`, named by its bytes as images are."""
    return audio_public_id_for(story_id, language, position, content_tag(data))


def audio_public_id_for(story_id: str, language: Language, position: int, tag: str) -> str:
    """The same, from the content tag of the bytes (for a caller that keeps the tag)."""
    return f"stories/{story_id}/audio/{language}/chapter-{position:02d}-{tag}"


def book_file_public_id(story_id: str, name: str, data: bytes) -> str:
    """`stories/{id}/books/{name}-{hash}`: a file of the book (reader page, EPUB, PDF)."""
    return f"stories/{story_id}/books/{name}-{content_tag(data)}"


def story_prefix(story_id: str) -> str:
    """`stories/{id}/`; refuses anything but a story id, which could widen a delete."""
    try:
        _STORY_ID.validate_python(story_id)
    except ValidationError:
        raise ValueError(f"not a story id: {story_id!r}") from None
    return f"stories/{story_id}/"


@dataclass(frozen=True)
class StoredMedia:
    public_id: str
    url: str
    version: str  # changes with every overwrite: URLs carry it, so caches never go stale
    bytes: int
    thumbnail_url: str = ""  # images only


@runtime_checkable
class MediaStore(Protocol):
    name: str

    def put(
        self, public_id: str, data: bytes, *, kind: MediaKind, extension: str
    ) -> StoredMedia:
        """Store data under public_id, replacing what was there."""
        ...

    def read(self, public_id: str, *, kind: MediaKind, extension: str) -> bytes:
        """The bytes stored under public_id; FileNotFoundError when there are none."""
        ...

    def delete(self, public_id: str, *, kind: MediaKind) -> bool:
        """Delete one file; False when it was not there."""
        ...

    def delete_story(self, story_id: str) -> int:
        """Delete every file of a story; returns how many went."""
        ...
