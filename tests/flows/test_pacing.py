"""Taking slots of the API limits (tasks/pacing.py): when the server's decay frees the
next slot of a rate limit, and the pacer, on the harness's real Prefect server, asking
only then."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound

from deployments.config import ApiLimit
from deployments.limits import ensure_api_limit
from tasks import pacing

pytestmark = pytest.mark.flows

IN_FLIGHT, RATE = "api:pacing-test", "rate:pacing-test"


@pytest.fixture
def limits() -> Iterator[None]:
    def make(rate: ApiLimit) -> None:
        with get_client(sync_client=True) as client:
            ensure_api_limit(client, IN_FLIGHT, ApiLimit(4, 0.0), dry_run=False)
            ensure_api_limit(client, RATE, rate, dry_run=False)

    make(ApiLimit(2, 2.0))
    pacing.reset()
    yield
    pacing.reset()
    with get_client(sync_client=True) as client:
        for name in (IN_FLIGHT, RATE):
            with contextlib.suppress(ObjectNotFound):
                client.delete_global_concurrency_limit_by_name(name)


def fill(name: str, slots: int) -> None:
    """Take slots as another process would."""
    with get_client(sync_client=True) as client:
        for _ in range(slots):
            client.increment_concurrency_slots(names=[name], slots=1, mode="rate_limit")


def limit_at(active: int, updated: datetime, size: int = 4, rate: float = 0.5) -> Any:
    return GlobalConcurrencyLimitResponse(
        name=RATE, limit=size, active_slots=active, slot_decay_per_second=rate, updated=updated
    )


# --- when the next slot is there ---------------------------------------------------------


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_bucket_with_room_can_be_asked_now() -> None:
    now = T0.timestamp() + 0.7
    assert pacing.next_slot_at(limit_at(3, T0), now) == now


def test_a_full_bucket_waits_for_the_next_whole_slot_of_decay() -> None:
    # 0.5 a second: slots decay at 2 s, 4 s, ... after the row's update, counted whole.
    assert pacing.next_slot_at(limit_at(4, T0), T0.timestamp() + 0.7) == pytest.approx(
        T0.timestamp() + 2 + pacing.MARGIN_SECONDS
    )
    # Read at 2.5 s with three held: the slot that decayed at 2 s is there now.
    assert pacing.next_slot_at(limit_at(3, T0), T0.timestamp() + 2.5) == T0.timestamp() + 2.5


def test_a_limit_made_smaller_waits_for_every_slot_over_it() -> None:
    # setup shrank the limit to 4 while 5 were held: two slots must decay.
    updated = T0 - timedelta(seconds=0.5)
    got = pacing.next_slot_at(limit_at(5, updated, size=4), T0.timestamp())
    assert got == pytest.approx(updated.timestamp() + 4 + pacing.MARGIN_SECONDS)


# --- the server --------------------------------------------------------------------------


@pytest.mark.usefixtures("limits")
def test_a_full_bucket_is_waited_out_with_a_single_refusal() -> None:
    with pacing.local_share(IN_FLIGHT, RATE):
        pass  # both limits read now, so the bucket is still full when the pacer asks
    fill(RATE, 2)  # a slot decays every 0.5 s from here
    pacing.take_rate_slot(IN_FLIGHT, RATE)
    assert pacing.stats()[IN_FLIGHT] == (1, 1)  # asked once, read, slept, granted


@pytest.mark.usefixtures("limits")
def test_threads_of_a_process_take_the_rate_in_turn_without_starving() -> None:
    taken: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        pacing.take_rate_slot(IN_FLIGHT, RATE)
        with lock:
            taken.append(time.monotonic())

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(taken) == 6
    granted, refusals = pacing.stats()[IN_FLIGHT]
    assert granted == 6
    # Two from the full bucket at once, then each slot after at most one refusal (the
    # ask right after a grant, which finds the bucket full again at no cost).
    assert refusals <= granted - 2, refusals


@pytest.mark.usefixtures("limits")
def test_a_rate_limit_deleted_after_it_was_read_is_not_counted_as_granted() -> None:
    pacing.take_rate_slot(IN_FLIGHT, RATE)  # read and known
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(RATE)
    with pytest.raises(pacing.LimitNotFound):
        pacing.take_rate_slot(IN_FLIGHT, RATE)
