"""Two runs about to pay for the same cached call: with a lock manager, one pays."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from storyloom import services
from tasks import policy

pytestmark = pytest.mark.flows
REDIS_URL = os.environ.get("STORYLOOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_URL} cannot be reached: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests", pytrace=False)
        pytest.skip(reason)
    return REDIS_URL


def pay_twice_at_once(locks: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], int]:
    """Two threads of one flow ask for the same paid call at the same moment."""
    monkeypatch.setenv("STORYLOOM_CACHE_LOCKS", locks)
    services.reset()
    paid: list[int] = []
    lock = threading.Lock()

    @task(**policy.paid_call_options(policy.locked(INPUTS + TASK_SOURCE)))
    def expensive(x: int, token: str) -> int:
        with lock:
            paid.append(x)
        time.sleep(0.5)  # long enough for the other caller to arrive meanwhile
        return 2 * x

    @flow
    def two_callers(token: str) -> list[Any]:
        futures = [expensive.submit(21, token), expensive.submit(21, token)]
        return [f.result() for f in futures]

    results = two_callers(uuid.uuid4().hex)  # a token of its own: no earlier cache
    return results, len(paid)


def test_with_redis_locks_only_one_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    results, paid = pay_twice_at_once(redis_or_skip(), monkeypatch)
    assert results == [42, 42]
    assert paid == 1


def test_without_locks_both_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    results, paid = pay_twice_at_once("", monkeypatch)
    assert results == [42, 42]
    assert paid == 2
