"""The media store protocol and the one folder layout every store uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import TypeAdapter, ValidationError

from storyloom.models import Language, StoryId

MediaKind = Literal["image", "audio"]
_STORY_ID: TypeAdapter[str] = TypeAdapter(StoryId)


def image_public_id(story_id: str, page_number: int) -> str:
    """`stories/{id}/images/page-03`, the picture for page 3: a repeat overwrites it."""
    return f"stories/{story_id}/images/page-{page_number:02d}"


def audio_public_id(story_id: str, language: Language, position: int) -> str:
    return f"stories/{story_id}/audio/{language}/chapter-{position:02d}"


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

    def delete_story(self, story_id: str) -> int:
        """Delete every file of a story; returns how many went."""
        ...
