"""What a paid task's result cost this run: nothing when the cache answered it."""

from __future__ import annotations

from typing import Protocol, TypeVar

from prefect.futures import PrefectFuture

from storyloom.models import Usage


class _Paid(Protocol):
    @property
    def usage(self) -> Usage: ...


P = TypeVar("P", bound=_Paid)


def paid(future: PrefectFuture[P]) -> tuple[P, Usage]:
    """The task's result and what it cost this run: a result Prefect took from the cache
    (state "Cached") was paid for by an earlier run, so it counts as reused, not spent."""
    result = future.result()
    cached = future.state.name == "Cached"
    return result, result.usage.as_reused() if cached else result.usage


class _PaidEach(Protocol):
    @property
    def usages(self) -> tuple[Usage, ...]: ...


E = TypeVar("E", bound=_PaidEach)


def paid_each(future: PrefectFuture[E]) -> tuple[E, list[Usage]]:
    """The same for a task that made several paid calls (a chapter's requests): each
    call's cost, all of them reused when Prefect took the whole result from the cache."""
    result = future.result()
    cached = future.state.name == "Cached"
    return result, [u.as_reused() if cached else u for u in result.usages]
