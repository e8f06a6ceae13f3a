"""The plain values the story store hands back: a book, a story's summary, a generation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from storyloom.models import (
    AudioChapter,
    GenerationConfig,
    Illustration,
    Language,
    Page,
    Story,
    Usage,
)

GenerationStatus = Literal["running", "complete", "failed"]
Output = Literal["pages", "illustrations", "chapters"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class StorySummary(_Record):
    """One line of a story list."""

    id: str
    kind: Literal["life", "creative"]
    title: str
    language: Language
    status: GenerationStatus | None  # of the newest generation; None before the first
    pages: int  # of the book readers see; 0 before the first publish
    updated_at: datetime


class GenerationInfo(_Record):
    """Where one generation stands, without its outputs."""

    id: str
    story_id: str
    status: GenerationStatus
    error: str | None
    flow_run_id: str | None
    prompt_version: str
    current: bool
    created_at: datetime
    finished_at: datetime | None


class StoryBook(_Record):
    """A story with every output of one generation, read in one transaction."""

    story: Story
    generation_id: str
    status: GenerationStatus
    config: GenerationConfig
    prompt_version: str
    flow_run_id: str | None
    error: str | None
    pages: list[Page]
    illustrations: list[Illustration]  # by position; position 1 is the banner
    chapters: dict[Language, list[AudioChapter]]  # by language, each by position
    banner_url: str | None
    thumbnail_url: str | None
    usage: list[Usage]  # one entry per provider, summed
    created_at: datetime
    finished_at: datetime | None
