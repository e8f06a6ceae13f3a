"""Taking the slots of an API's Prefect global limits without wasting them.

Prefect's `rate_limit()` and `concurrency()` helpers wait out a refusal (423) for the
Retry-After the server sends: for a rate limit, one decay interval drawn at random (an
exponential around 1/rate, clamped), every waiting thread on its own. A slot that frees
while the waiters sleep stays unused until one of them wakes, and the server counts the
decay in whole slots from the row's last update (Prefect 3.9,
server/models/concurrency_limits_v2.py), so a late grant also pushes every later slot
back by its lateness. Under steady demand, as a story's thirty speech calls make, the
limit runs well below its rate (docs/performance.md has the figures).

So a paid call takes its slots here, in two steps, both first come first served:

- **In flight** (`api:<api>`, no decay): a semaphore of this process as large as the
  limit, then Prefect's `concurrency()` with its lease. A process alone never waits at
  the server, and its threads queue in order instead of polling it together.
- **Rate** (`rate:<api>`, slot decay): one thread of the process at a time asks, through
  the client's public increment call. When refused, it reads the limit (the slots held
  after decay, and when the row last changed) and sleeps until the decay frees the next
  slot, then asks again: it asks when a slot is due, not at a random later time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

LOCKED = 423
# Asked this long after the moment the decay frees a slot: the server's clock and ours
# (the same machine, or NTP) and the request's own way there.
MARGIN_SECONDS = 0.03
# A limit's size and rate are read once per process; a resize by `storyloom setup`
# reaches running processes within this many seconds.
SIZE_TTL_SECONDS = 60.0


class LimitNotFound(LookupError):
    """The limit is not on the Prefect server."""


@dataclass
class _Pace:
    """What this process knows of one API's two limits."""

    in_flight: threading.Semaphore
    size: int  # the in-flight limit's slots, as read
    read_at: float
    rate_turn: threading.Lock = field(default_factory=threading.Lock)
    refused: int = 0  # rate refusals (tests read it)
    taken: int = 0


_paces_lock = threading.Lock()
_paces: dict[str, _Pace] = {}


def stats() -> dict[str, tuple[int, int]]:
    """Per in-flight limit name: (rate slots taken, refusals) in this process."""
    with _paces_lock:
        return {name: (pace.taken, pace.refused) for name, pace in _paces.items()}


def reset() -> None:
    """Forget what was read (tests that remake the limits)."""
    with _paces_lock:
        _paces.clear()


def _read(client: SyncPrefectClient, name: str) -> GlobalConcurrencyLimitResponse:
    try:
        return client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound as exc:
        raise LimitNotFound(name) from exc


def _pace(in_flight_name: str, rate_name: str) -> _Pace:
    """The process's pace of an API, with both its limits read from the server at first
    use (and again after SIZE_TTL_SECONDS): the server counts an increment of a limit it
    does not have as granted, so a missing one must be found here."""
    now = time.monotonic()
    with _paces_lock:
        pace = _paces.get(in_flight_name)
        if pace is not None and now - pace.read_at < SIZE_TTL_SECONDS:
            return pace
    with get_client(sync_client=True) as client:
        size = max(1, _read(client, in_flight_name).limit)
        _read(client, rate_name)
    with _paces_lock:
        pace = _paces.get(in_flight_name)
        if pace is None or pace.size != size:
            # A resized limit gets a new semaphore; holders of the old one release it.
            old = pace
            pace = _Pace(threading.Semaphore(size), size, now)
            if old is not None:
                pace.refused, pace.taken = old.refused, old.taken
            _paces[in_flight_name] = pace
        pace.read_at = now
        return pace


@contextmanager
def local_share(in_flight_name: str, rate_name: str) -> Iterator[None]:
    """Hold one of this process's share of the in-flight limit for the block, before
    the server's slot is taken (with Prefect's `concurrency()`) and until it is given
    back: threads beyond the limit's size wait here, in order, not at the server."""
    with _pace(in_flight_name, rate_name).in_flight:
        yield


def next_slot_at(limit: GlobalConcurrencyLimitResponse, now: float) -> float:
    """When (epoch seconds) the rate limit can grant one more slot, as the server counts:
    `active_slots` is what it holds after decay now, and the decay runs in whole slots
    from `updated`, one every 1/rate seconds."""
    rate = limit.slot_decay_per_second
    missing = limit.active_slots + 1 - limit.limit  # slots that must decay first
    if missing <= 0 or rate <= 0 or limit.updated is None:
        return now
    since = limit.updated.timestamp()
    decayed = math.floor(rate * max(0.0, now - since))
    return since + (decayed + missing) / rate + MARGIN_SECONDS


def take_rate_slot(in_flight_name: str, rate_name: str) -> None:
    """Take one slot of the rate limit, asking only when the decay can have freed one."""
    pace = _pace(in_flight_name, rate_name)
    with pace.rate_turn, get_client(sync_client=True) as client:
        while True:
            try:
                granted = client.increment_concurrency_slots(
                    names=[rate_name], slots=1, mode="rate_limit"
                ).json()
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != LOCKED:
                    raise
                pace.refused += 1
                limit = _read(client, rate_name)
                now = time.time()
                time.sleep(max(0.0, next_slot_at(limit, now) - now))
                continue
            if not any(limit.get("name") == rate_name for limit in granted):
                raise LimitNotFound(rate_name)  # deleted since it was read
            pace.taken += 1
            return
