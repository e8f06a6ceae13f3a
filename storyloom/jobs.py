"""The job facade over Prefect: the only module of storyloom that imports Prefect.

Callers (the CLI, the HTTP API) get plain values back and never touch Prefect's client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from storyloom.models import GenerationConfig

if TYPE_CHECKING:
    from deployments.report import SetupReport
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


def setup(*, dry_run: bool = False) -> SetupReport:
    """Create or update the pools, limits, alert and deployments on the Prefect server."""
    from deployments.setup import run_setup

    return run_setup(dry_run=dry_run)


def work(pool: str, *, limit: int | None = None, name: str | None = None) -> int:
    """Run a worker for one pool until it is told to stop; returns its exit code."""
    from deployments.worker import run_worker

    return run_worker(pool, limit=limit, name=name)
