"""Fan-out from `story` to its child flows, and the wait for all of them.

In the demo and the tests the children run in this process, as subflows, side by side
in threads (each with a copy of the parent's Prefect context, so they nest under it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture

from storyloom.providers.errors import AccountError

R = TypeVar("R")

Child = tuple[Callable[..., Any], Mapping[str, Any]]


def run_children(**children: Child | None) -> dict[str, Any]:
    """Run each named child flow with its parameters; wait for all; return their results.

    Every child runs to its end even when another fails; then the first failure is
    raised, so the parent fails with the reason and nothing is half published.
    """
    wanted = {name: child for name, child in children.items() if child is not None}
    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="child-flow") as pool:
        futures = {
            name: pool.submit(contextvars.copy_context().run, partial(fn, **params))
            for name, (fn, params) in wanted.items()
        }
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {name: f.result() for name, f in futures.items()}


def submit_many(
    task: Task[..., R], calls: Sequence[tuple[Any, ...]]
) -> list[PrefectFuture[R]]:
    """Submit one task per argument tuple, the first alone: if the provider refuses the
    account (a bad key, an exhausted quota) the run fails after one call, not after a
    whole batch. Otherwise the rest run side by side and each failure is the caller's."""
    if not calls:
        return []
    first = task.submit(*calls[0])
    first.wait()
    if first.state.is_failed():
        try:
            first.result()
        except AccountError:
            raise
        except Exception:  # noqa: S110 - an item's own failure: the caller decides
            pass
    return [first, *(task.submit(*args) for args in calls[1:])]
