"""The media store protocol and the one folder layout every store uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from storyloom.models import Language

MediaKind = Literal["image", "audio"]


def image_public_id(story_id: str, position: int) -> str:
    """`stories/{id}/images/page-03`: deterministic, so a repeat overwrites."""
    return f"stories/{story_id}/images/page-{position:02d}"


def audio_public_id(story_id: str, language: Language, position: int) -> str:
    return f"stories/{story_id}/audio/{language}/chapter-{position:02d}"


def story_prefix(story_id: str) -> str:
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
