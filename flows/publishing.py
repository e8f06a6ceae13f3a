"""A generation as flows see it: where a run writes its outputs, published all at once.

A run writes pages, illustrations and chapters into a generation readers cannot see;
only when everything is there does the story's pointer move to it, in one transaction.
A failed run leaves the previous book in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from prefect.runtime import flow_run

from storyloom import services
from storyloom.models import (
    AudioChapter,
    CreativeStory,
    GenerationConfig,
    Illustration,
    Language,
    LifeStory,
    Page,
    Usage,
)
from storyloom.prompts import PROMPT_VERSION

Output = Literal["pages", "illustrations", "chapters"]


@dataclass(frozen=True)
class Generation:
    id: str
    story: LifeStory | CreativeStory
    config: GenerationConfig

    @property
    def story_id(self) -> str:
        return self.story.id

    def pages(self) -> list[Page]:
        return services.store().generation(self.id).pages

    def save_pages(self, pages: list[Page]) -> None:
        services.store().save_pages(self.id, pages)

    def save_illustrations(self, items: list[Illustration]) -> None:
        services.store().save_illustrations(self.id, items)

    def save_chapters(self, language: Language, chapters: list[AudioChapter]) -> None:
        services.store().save_chapters(self.id, language, chapters)

    def add_usage(self, usage: list[Usage]) -> None:
        services.store().add_usage(self.id, usage)


def _resumed(story_id: str, run_id: str) -> str | None:
    """The generation this flow run started before it was handed back, if still open:
    the rerun continues it (and its paid work is cached) instead of starting over."""
    for info in services.store().generations(story_id, limit=5):
        if info.flow_run_id == run_id and info.status == "running":
            return info.id
    return None


@contextmanager
def open_generation(
    story_id: str,
    generation_id: str | None,
    *,
    config: GenerationConfig | None = None,
    copy: Sequence[Output] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Iterator[Generation]:
    """Join the parent's generation, or start (and at the end publish) a new one.

    A new generation takes `config`, or else the current book's config with the non-None
    `overrides`, and copies the `copy` outputs of the current book into itself.
    """
    store = services.store()
    story = store.get_story(story_id)
    if generation_id is not None:
        book = store.generation(generation_id)
        yield Generation(generation_id, story, book.config)
        return
    if config is None:
        current = store.book(story_id)
        if current is None:
            raise ValueError(f"story {story_id!r} has no book yet: run the story flow first")
        changes = {k: v for k, v in (overrides or {}).items() if v is not None}
        config = GenerationConfig.model_validate({**current.config.model_dump(), **changes})
    config = config.for_story(story)
    run_id = flow_run.get_id()
    new_id = _resumed(story_id, str(run_id)) if run_id else None
    if new_id is None:
        new_id = store.start_generation(
            story_id,
            config,
            prompt_version=PROMPT_VERSION,
            flow_run_id=str(run_id) if run_id else None,
            copy_from_current=copy,
        )
    try:
        yield Generation(new_id, story, config)
    except BaseException as exc:
        store.fail(new_id, f"{type(exc).__name__}: {exc}")
        raise
    store.publish(new_id)
