"""How every paid call is run: retries on transient errors only, Retry-After honoured,
a cache key from the call's inputs, and a persisted result so a rerun pays nothing twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, State, StateType, TaskRun
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling
from prefect.tasks import Task, exponential_backoff
from prefect.transactions import IsolationLevel

from storyloom import health
from storyloom.limits import Role, api_for, in_flight_limit, rate_limit_name
from storyloom.providers.errors import AccountError, TransientError
from storyloom.settings import get_settings
from tasks import pacing


def locked(policy: CachePolicy) -> CachePolicy:
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
PAID_CACHE: CachePolicy = locked(INPUTS + TASK_SOURCE)

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


# How long a slot of an API limit outlives a holder that stopped renewing it (a killed
# worker). Renewed every SLOT_LEASE_SECONDS * 0.75 while the call runs.
SLOT_LEASE_SECONDS = 60.0


class ApiLimitMissing(AccountError):
    """STORYLOOM_API_LIMITS is on and a limit is not on the Prefect server. An account
    error: every call to that API would fail the same way, so a run stops at the first."""


@contextmanager
def api_slot(role: Role, provider_name: str) -> Iterator[None]:
    """Hold the call's slots of its API's global limits (see _api_slots), and tell the
    worker running this flow run how the provider answered (storyloom/health.py): an
    account error is noted, a success clears it."""
    try:
        with _api_slots(role, provider_name):
            yield
    except RunCancelled:
        raise
    except AccountError as exc:
        health.record_account_error(provider_name, exc)
        raise
    health.record_success(provider_name)


@contextmanager
def _api_slots(role: Role, provider_name: str) -> Iterator[None]:
    """Hold the call's slots of its API's global limits, when STORYLOOM_API_LIMITS is on.

    A slot of `api:<api>` (no decay: calls in flight), held for the call; then, holding
    it, a slot of `rate:<api>` (slot decay: the sustained rate), taken last so the call
    starts right after it. Use it inside honour_retry_after(), so a Retry-After wait
    happens with the slot given back; Prefect's own waits between retries are outside
    the task body, so outside it too. Offline providers and local files take nothing.
    Every call, limited or not, then checks that its run is not being cancelled.
    """
    api = api_for(role, provider_name) if get_settings().api_limits else None
    if api is None:
        stop_if_cancelled(provider_name)
        yield
        return
    rate, in_flight = rate_limit_name(api), in_flight_limit(api)
    with ExitStack() as held:
        # This process's share first, then the server's slot (given back before the
        # share, on the way out), then a slot of the rate (tasks/pacing.py says why not
        # Prefect's rate_limit()).
        _acquire(in_flight, api, lambda: held.enter_context(pacing.local_share(in_flight, rate)))
        _acquire(
            in_flight,
            api,
            lambda: held.enter_context(
                concurrency(
                    in_flight,
                    strict=True,
                    holder=_holder(),
                    # The holder renews its lease while the call runs; one whose process
                    # died gives its slot back when the lease runs out: within a minute,
                    # not Prefect's default five.
                    lease_duration=SLOT_LEASE_SECONDS,
                    # A lease renewal that fails (a Prefect API hiccup) must not kill a
                    # paid call halfway; the slot frees when its lease runs out.
                    raise_on_lease_renewal_failure=False,
                )
            ),
        )
        _acquire(rate, api, lambda: pacing.take_rate_slot(in_flight, rate))
        # Checked last, after any wait for a slot: the call starts right after it.
        stop_if_cancelled(provider_name)
        yield


class RunCancelled(AccountError):
    """The flow run making the call, or a run above it, is being cancelled: the call is
    not made. An account error: every further call of the run would stop the same way,
    so a batch stops at the first (flows re-raise AccountError) and nothing retries it."""


CANCELLED = [StateType.CANCELLING, StateType.CANCELLED]


@dataclass(frozen=True)
class _Lineage:
    run: UUID  # the flow run making the call
    runs: tuple[UUID, ...]  # it and the runs above it (a child's parent, ...)
    supervised: bool  # started from a deployment: a worker turns Cancelling into Cancelled


_lineages_lock = threading.Lock()
_lineages: dict[UUID, _Lineage] = {}


def stop_if_cancelled(provider_name: str) -> None:
    """Raise RunCancelled if the calling task's flow run, or a flow run above it, is
    Cancelling or Cancelled; nothing without a task run context.

    Cost: one small API read per paid call (a filter on a few run ids that answers with
    nothing while no run is cancelled); the runs above this one are looked up once per
    flow run and process. A call is worth far more than the read, and the check is what
    stops the spending in the seconds (up to 30 when a task is stuck in a thread) that a
    worker takes to kill a cancelled run's process.
    """
    context = TaskRunContext.get()
    flow_run_id = context.task_run.flow_run_id if context else None
    if flow_run_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            cancelled = _cancelled_run(client, flow_run_id)
    except Exception as exc:
        # A hiccup of the Prefect API must not fail a paid call that would succeed.
        get_run_logger().warning("could not check whether the run is cancelled: %r", exc)
        return
    if cancelled is not None:
        raise RunCancelled(provider_name, f"not called: {cancelled}")


def _cancelled_run(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """What is cancelled, said in a few words, or None."""
    lineage = _lineage(client, flow_run_id)
    hits = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=list(lineage.runs)),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=CANCELLED)),
        ),
        limit=len(lineage.runs),
    )
    if not hits:
        return None
    if any(run.id == lineage.run for run in hits):
        return "this flow run is cancelled"
    if lineage.supervised:
        # A parent is cancelled and its hook has not reached this child yet: the child
        # cancels itself, so it ends Cancelled (not Failed) and its worker stops it now
        # rather than after the parent's process is gone.
        client.set_flow_run_state(
            lineage.run, Cancelling(message=f"its parent run {hits[0].name} was cancelled")
        )
    return f"the parent run {hits[0].name} is cancelled"


def _lineage(client: SyncPrefectClient, flow_run_id: UUID) -> _Lineage:
    if (known := _lineages.get(flow_run_id)) is not None:
        return known
    own = client.read_flow_run(flow_run_id)
    runs, parent_task_run_id = [own.id], own.parent_task_run_id
    while parent_task_run_id is not None and len(runs) < 8:
        above = client.read_task_run(parent_task_run_id).flow_run_id
        if above is None or above in runs:
            break
        runs.append(above)
        parent_task_run_id = client.read_flow_run(above).parent_task_run_id
    lineage = _Lineage(own.id, tuple(runs), own.deployment_id is not None)
    with _lineages_lock:
        if len(_lineages) > 1024:  # a long-lived process (the demo's) sees many runs
            _lineages.clear()
        _lineages[flow_run_id] = lineage
    return lineage


def _acquire(name: str, api: str, take: Callable[[], object]) -> None:
    try:
        take()
    except (ConcurrencySlotAcquisitionError, pacing.LimitNotFound) as exc:
        if isinstance(exc, pacing.LimitNotFound):
            name = str(exc)
        elif _limit_exists(name):
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
