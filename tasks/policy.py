"""How every paid call is run: retries on transient errors only, Retry-After honoured,
a cache key from the call's inputs, and a persisted result so a rerun pays nothing twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE, CachePolicy
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, State, TaskRun
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency, rate_limit
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound
from prefect.tasks import Task, exponential_backoff
from prefect.transactions import IsolationLevel

from storyloom.limits import Role, api_for, in_flight_limit, rate_limit_name
from storyloom.providers.errors import AccountError, TransientError
from storyloom.settings import get_settings


def _locked(policy: CachePolicy) -> CachePolicy:
    """The policy with the lock manager the settings name, so that two workers never
    compute (and pay for) the same key at once; unchanged when none is named."""
    where = get_settings().cache_locks
    if not where:
        return policy
    from prefect_redis import RedisLockManager

    return policy.configure(
        isolation_level=IsolationLevel.SERIALIZABLE,
        lock_manager=RedisLockManager(connection_url=where),
    )


# No RUN_ID: a new flow run (a regeneration, a retry from the UI) reuses paid work whose
# inputs did not change. Every paid task takes the provider's name as an input, so a
# switch from offline to real providers is a different key.
PAID_CACHE: CachePolicy = _locked(INPUTS + TASK_SOURCE)

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


class ApiLimitMissing(AccountError):
    """STORYLOOM_API_LIMITS is on and a limit is not on the Prefect server. An account
    error: every call to that API would fail the same way, so a run stops at the first."""


@contextmanager
def api_slot(role: Role, provider_name: str) -> Iterator[None]:
    """Hold the call's slots of its API's global limits, when STORYLOOM_API_LIMITS is on.

    A slot of `api:<api>` (no decay: calls in flight), held for the call; then, holding
    it, a slot of `rate:<api>` (slot decay: the sustained rate), taken last so the call
    starts right after it. Use it inside honour_retry_after(), so a Retry-After wait
    happens with the slot given back; Prefect's own waits between retries are outside
    the task body, so outside it too. Offline providers and local files take nothing.
    """
    api = api_for(role, provider_name) if get_settings().api_limits else None
    if api is None:
        yield
        return
    rate, in_flight = rate_limit_name(api), in_flight_limit(api)
    with ExitStack() as held:
        # strict: Prefect skips a missing limit with only a warning, and calls unthrottled.
        _acquire(
            in_flight,
            api,
            lambda: held.enter_context(
                concurrency(
                    in_flight,
                    strict=True,
                    holder=_holder(),
                    # A lease renewal that fails (a Prefect API hiccup) must not kill a
                    # paid call halfway; the slot frees when its lease runs out.
                    raise_on_lease_renewal_failure=False,
                )
            ),
        )
        _acquire(rate, api, lambda: rate_limit(rate, strict=True))
        yield


def _acquire(name: str, api: str, take: Callable[[], object]) -> None:
    try:
        take()
    except ConcurrencySlotAcquisitionError as exc:
        if _limit_exists(name):
            raise  # the server refused for another reason; Prefect's message says which
        raise ApiLimitMissing(
            api,
            f"the Prefect global concurrency limit {name!r} does not exist on this server. "
            "STORYLOOM_API_LIMITS is on, so every call must take a slot of it: run "
            "`storyloom setup` against this server (or set STORYLOOM_API_LIMITS=false "
            "where no limits are wanted, as in the in-process demo)",
        ) from exc


def _limit_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return True


def _holder() -> ConcurrencyLeaseHolder | None:
    # Names the task run holding the slot, so the UI can show who holds what.
    context = TaskRunContext.get()
    return ConcurrencyLeaseHolder(type="task_run", id=context.task_run.id) if context else None


# Uploads: the public id names the bytes, so the bytes need not be hashed again for the
# key. Cached only within one flow run (its retries): across runs the story database says
# which files exist (a file a generation no longer uses may have been deleted since).
UPLOAD_CACHE: CachePolicy = (INPUTS - "data") + TASK_SOURCE + RUN_ID


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
