"""How every paid call is run: retries on transient errors only, Retry-After honoured,
a cache key from the call's inputs, and a persisted result so a rerun pays nothing twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task, exponential_backoff

from storyloom.providers.errors import TransientError
from storyloom.settings import get_settings

# No RUN_ID: a new flow run (a regeneration, a retry from the UI) reuses paid work whose
# inputs did not change. Every paid task takes the provider's name as an input, so a
# switch from offline to real providers is a different key.
PAID_CACHE: CachePolicy = INPUTS + TASK_SOURCE

_waits_lock = threading.Lock()
requested_waits: list[float] = []  # what servers asked for, in order (tests read it)


def is_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition: only errors that can heal (429, 5xx, timeouts) are retried."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


@contextmanager
def honour_retry_after() -> Iterator[None]:
    """Wait what the server asked before the error reaches Prefect's own backoff."""
    try:
        yield
    except TransientError as exc:
        if exc.retry_after:
            settings = get_settings()
            wait = min(exc.retry_after, settings.max_retry_after_seconds)
            with _waits_lock:
                requested_waits.append(wait)
            time.sleep(wait * settings.retry_wait_scale)
        raise


# Uploads are idempotent (deterministic public ids) and their results point at files
# that can be deleted: they are reused only within one flow run (its retries), never
# across runs, so a new run always puts its files back.
UPLOAD_CACHE: CachePolicy = INPUTS + TASK_SOURCE + RUN_ID


def paid_call_options(cache_policy: CachePolicy = PAID_CACHE) -> dict[str, Any]:
    """The @task options every paid call shares, from settings."""
    settings = get_settings()
    return {
        "retries": settings.retries,
        "retry_delay_seconds": exponential_backoff(
            backoff_factor=settings.retry_base_seconds * settings.retry_wait_scale
        )(settings.retries),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": is_transient,
        "cache_policy": cache_policy,
        "persist_result": True,
    }
