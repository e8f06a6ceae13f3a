"""The plain values the story store hands back: a book, a story's summary, a generation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from storyloom.models import (
    AudioChapter,
    BookExport,
    GenerationConfig,
    Illustration,
    Language,
    Page,
    Story,
    Usage,
    WritingReport,
)

GenerationStatus = Literal["running", "complete", "failed", "cancelled"]
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
    base_generation_id: str | None  # the book when it started; it publishes only over that
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
    writing: WritingReport | None = None  # how the text was written; None before writing
    # Narration languages that failed after their retries, with the reason: the book is
    # published with the languages that completed; narrating one again costs only it.
    narration_failures: dict[Language, str] = Field(default_factory=dict)
    exports: list[BookExport] = Field(default_factory=list)  # reader page, EPUBs, PDF
    created_at: datetime
    finished_at: datetime | None


# Why a story needs work again, in priority order: a story gets the first that applies.
Reason = Literal[
    "last run failed", "last run abandoned", "missing outputs", "older prompt version",
    "older config",
]  # fmt: skip
REASONS: tuple[Reason, ...] = (
    "last run failed",
    "last run abandoned",
    "missing outputs",
    "older prompt version",
    "older config",
)


class WorkItem(_Record):
    """A story that needs generating again, and with which config."""

    story_id: str
    reason: Reason
    detail: str  # what exactly: "2 of 4 illustrations", "prompts v1, now v2" ...
    # The current book's config (read with today's schema), or, with no book yet, the
    # failed generation's.
    config: GenerationConfig
    # The story's newest generation: any new run starts another, so this names the
    # state the item was found in (an idempotency key for resubmitting it).
    key: str
    last_run_at: datetime  # when that newest generation was started
