"""The job facade over Prefect: the only module of storyloom that imports Prefect.

Callers (the CLI, the HTTP API) get plain values back and never touch Prefect's client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from storyloom.models import GenerationConfig

if TYPE_CHECKING:
    from flows.progress import ProgressEvent
    from flows.story import StoryResult


def generate_here(
    story_id: str,
    config: GenerationConfig,
    on_progress: Callable[[ProgressEvent], None] | None = None,
) -> StoryResult:
    """Run the `story` flow in this process (children as subflows) and wait for it."""
    from flows.progress import add_listener
    from flows.story import story

    stop = add_listener(on_progress) if on_progress else None
    try:
        result: StoryResult = story(story_id=story_id, **config.model_dump())
        return result
    finally:
        if stop:
            stop()
