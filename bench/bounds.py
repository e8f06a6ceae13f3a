"""The least time the limits allow: a story's critical path, a batch's bound, busy time.

Pure: the pipeline benchmark (bench/pipeline.py) feeds it the provider calls the loopback
fakes recorded; tests/bench/test_pipeline_math.py feeds it hand-made ones.

A story's critical path is the finish time of an ideal scheduler that adds nothing on
top of the calls: it runs the recorded calls (their own durations) in the order the flow
must (a `Serial` of steps; a `Parallel` of branches that may overlap; a `Stage` of calls
submitted together, every one needed before the next step), each call starting at the
first moment its API has a slot in flight free and a token of its rate (a bucket as deep
as its slots, full at the start: storyloom/settings.py), never earlier.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limit:
    """One external API's two limits: calls in flight, and calls a second sustained."""

    in_flight: int
    per_second: float


@dataclass(frozen=True)
class Stage:
    """Calls to one API submitted together; the next step needs all of them."""

    api: str
    durations: tuple[float, ...]
    name: str = ""


@dataclass(frozen=True)
class Serial:
    steps: tuple[Node, ...]


@dataclass(frozen=True)
class Parallel:
    branches: tuple[Node, ...]


Node = Stage | Serial | Parallel


@dataclass
class _Api:
    """An API's slots and rate bucket as the ideal scheduler uses them."""

    limit: Limit
    tokens: float
    at: float = 0.0  # when `tokens` was counted
    ends: list[float] = field(default_factory=list)  # of the calls holding a slot

    def start(self, ready: float, duration: float) -> float:
        """Take a slot and a token for a call ready at `ready`; when it starts."""
        at = ready
        holding = sorted(end for end in self.ends if end > at)
        if len(holding) >= self.limit.in_flight:
            at = holding[len(holding) - self.limit.in_flight]
        tokens = min(self.limit.in_flight, self.tokens + self.limit.per_second * (at - self.at))
        if tokens < 1:
            at += (1 - tokens) / self.limit.per_second
            tokens = 1.0
        self.tokens, self.at = tokens - 1, at
        self.ends = [end for end in self.ends if end > at] + [at + duration]
        return at


def _finish(node: Node, ready: float, apis: dict[str, _Api]) -> float:
    if isinstance(node, Stage):
        api = apis[node.api]
        return max([api.start(ready, d) + d for d in node.durations], default=ready)
    if isinstance(node, Serial):
        for step in node.steps:
            ready = _finish(step, ready, apis)
        return ready
    # Each branch sees the limits as if alone (a lower bound: a shared API is not
    # contended); afterwards each API continues from the branch that used it last.
    ends: list[float] = []
    states: list[dict[str, _Api]] = []
    for branch in node.branches:
        own = copy.deepcopy(apis)
        ends.append(_finish(branch, ready, own))
        states.append(own)
    for name in apis:
        apis[name] = max((s[name] for s in states), key=lambda a: a.at, default=apis[name])
    return max(ends, default=ready)


def critical_path(node: Node, limits: Mapping[str, Limit]) -> float:
    """Seconds from the first call to the last under the limits, with nothing on top."""
    apis = {name: _Api(limit, tokens=float(limit.in_flight)) for name, limit in limits.items()}
    return _finish(node, 0.0, apis)


def api_bound(durations: Sequence[float], limit: Limit) -> float:
    """The least time an API needs for these calls: its total call time over its slots,
    or its calls at its rate (the first `in_flight` at once, then one per 1/rate; the
    last one still has to run)."""
    if not durations:
        return 0.0
    by_slots = sum(durations) / limit.in_flight
    by_rate = max(0, len(durations) - limit.in_flight) / limit.per_second + min(durations)
    return max(by_slots, by_rate)


def pool_bound(runs: int, seconds_each: float, slots: int) -> float:
    """The least time a work pool needs for `runs` runs that each last at least
    `seconds_each` while holding one of its `slots`."""
    return runs * seconds_each / slots


def union_seconds(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside at least one span."""
    total, reached = 0.0, start
    for begin, finish in sorted(spans):
        begin, finish = max(begin, reached), min(finish, end)
        if finish > begin:
            total += finish - begin
            reached = finish
    return total


def busy_share(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """The share of [start, end] with at least one span open (a call in flight)."""
    if end <= start:
        return 0.0
    return union_seconds(spans, start, end) / (end - start)


def stage_sizes(node: Node) -> dict[str, int]:
    """Each named stage's calls, in order (for the method's account)."""
    if isinstance(node, Stage):
        return {node.name or node.api: len(node.durations)}
    found: dict[str, int] = {}
    for child in node.steps if isinstance(node, Serial) else node.branches:
        for name, count in stage_sizes(child).items():
            found[name] = found.get(name, 0) + count
    return found


def median_and_worst(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    return statistics.median(values), max(values)
