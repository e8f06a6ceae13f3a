"""How long the result storage keeps what the paid tasks return.

A paid call that returns the bytes of a picture or of speech (draw-image, speak) keeps
them in the result storage for `result_days` only: long enough that a failed, cancelled
or crashed run done again pays nothing twice, short enough to keep the storage bounded.
What lasts is a small *kept* result above it (keep-picture, voice-chapter): the tag of
the bytes, which the media store holds under the book's public ids, never the bytes. A
rerun of a kept book, or a regeneration after an edit, takes its unchanged pictures and
chapters from the media store, however old they are, and pays nothing for them.
`storyloom cache prune` (tasks/cache.py) deletes what expired and every kept result
whose file no generation uses any more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from prefect.cache_policies import CachePolicy
from prefect.client.schemas.objects import State
from prefect.tasks import Task
from prefect.transactions import CommitMode, transaction

from storyloom.models import Usage
from storyloom.settings import get_settings
from tasks.policy import locked

P = ParamSpec("P")
R = TypeVar("R")


def expiring(task: Task[P, R]) -> Task[P, R]:
    """The paid task with its results kept `result_days` (read when called): for the
    calls whose results hold bytes the media store keeps too."""
    return task.with_options(cache_expiration=timedelta(days=get_settings().result_days))


def kept_call_options(cache_policy: CachePolicy) -> dict[str, Any]:
    """The @task options of a task that keeps a reference to stored media: cached for
    good (no run id, no expiry), not retried itself (the calls inside it retry on their
    own), and pickled, so the bytes its result leaves out of its state stay out."""
    return {
        "cache_policy": locked(cache_policy),
        "persist_result": True,
        "result_serializer": "pickle",
        "retries": 0,
    }


@contextmanager
def committed_at_once() -> Iterator[None]:
    """Paid tasks called inside it write their results as each one ends, not when the
    task that calls them does: a call paid for stays cached even if its caller then fails
    or its process dies (by default Prefect commits nested results with their parent)."""
    with transaction(commit_mode=CommitMode.EAGER):
        yield


def cost(usage: Usage, state: State[Any]) -> Usage:
    """What the paid call whose state this is cost this run: nothing when the cache
    answered it (paid for by an earlier run, it counts as reused)."""
    return usage.as_reused() if state.name == "Cached" else usage
