"""Fan-out from `story` to its child flows, and the wait for all of them.

Two modes, the same flows. Under a deployment the children are started as runs of their
own deployments (`illustrations/generate` on the `images` pool, `narration/generate` on
`audio`), nested under the parent in the UI; in the demo and the tests they run in this
process as subflows, side by side in threads (each thread with a copy of the parent's
Prefect context, so they nest under it too).

A parent that stops for any reason leaves no child running: an error while it waits
cancels the children it started, and its on_failure / on_cancellation / on_crashed
hook (`cancel_children`) cancels whatever is still unfinished.

A parent that only waits gives its work-pool slot back: it sets its own run Paused (in
place: its process goes on polling) and ends from there, so the next story is written
meanwhile.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

import httpx
from prefect import Flow, Task, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.deployments import run_deployment
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture
from prefect.logging import get_logger
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelling, Paused

from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings

R = TypeVar("R")
Child = tuple[Flow[..., Any], Mapping[str, Any]]
# Every child flow has one deployment, named like this: `illustrations/generate`.
CHILD_DEPLOYMENT = "generate"
FINAL = {
    StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED,
}  # fmt: skip
# Not started yet: waiting for a worker (Scheduled, Late, AwaitingRetry) or being
# started by one (Pending).
NOT_STARTED = {StateType.SCHEDULED, StateType.PENDING}
MAX_READ_BACKOFF_SECONDS = 30.0
# How long a Crashed child is given to be rerun before the parent counts it as ended.
CRASH_GRACE_SECONDS = 30.0


class ChildRunError(RuntimeError):
    """A child run did not complete; the parent fails with its reason."""


class ChildNotStarted(ChildRunError):
    """A child sat unstarted longer than STORYLOOM_CHILD_START_TIMEOUT_SECONDS."""


def fanout_mode() -> Literal["in-process", "deployments"]:
    """Deployments when set so, or when `story` itself runs from a deployment."""
    chosen = get_settings().fanout
    if chosen != "auto":
        return chosen
    return "deployments" if deployment.get_id() else "in-process"


def run_children(**children: Child | None) -> dict[str, Any]:
    """Run each named child flow with its parameters; wait for all; return their results.

    Every child runs to its end even when another fails; then the first failure is
    raised, so the parent fails with the reason and nothing is half published.
    """
    wanted = {name: child for name, child in children.items() if child is not None}
    if not wanted:
        return {}
    if fanout_mode() == "deployments":
        return _by_deployment(wanted)
    return _in_process(wanted)


def _in_process(wanted: Mapping[str, Child]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="child-flow") as pool:
        futures = {
            # A child here hands its result back in memory: persisting it (as a child
            # run from its deployment must, for its parent elsewhere) would only add a
            # file to the result storage every run.
            name: pool.submit(
                contextvars.copy_context().run,
                partial(fn.with_options(persist_result=False), **params),
            )
            for name, (fn, params) in wanted.items()
        }
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {name: f.result() for name, f in futures.items()}


def _by_deployment(wanted: Mapping[str, Child]) -> dict[str, Any]:
    deployments = {name: f"{fn.name}/{CHILD_DEPLOYMENT}" for name, (fn, _) in wanted.items()}
    runs: dict[str, FlowRun] = {}
    try:
        for name, (_, params) in wanted.items():
            # A parent handed back by a stopping worker reruns with the same generation:
            # the key gives it the children it already started instead of new ones.
            runs[name] = cast(
                FlowRun,
                run_deployment(
                    deployments[name],
                    parameters=dict(params),
                    timeout=0,
                    as_subflow=True,  # nested under the parent, found by cancel_children
                    idempotency_key=f"{params.get('generation_id')}:{name}",
                ),
            )
        # From here the parent only waits: its pool slot goes to the next run at once.
        unfinished = [deployments[n] for n, run in runs.items() if run.state_type not in FINAL]
        if unfinished:
            _free_slot(unfinished)
        states = _wait(runs, deployments)
    except Exception as exc:
        # Whatever ends the wait early (an API that stays down, a child no worker takes,
        # a bug) fails the parent: the children must not go on paying for a book that
        # will not be published. A hand-back (TerminationSignal, a BaseException) is not
        # caught: the rerun continues with the same children.
        _cancel_quietly([run.id for run in runs.values()], f"the parent stopped waiting: {exc}")
        raise
    failed = [
        f"{name} ({runs[name].name}) ended {state.name}: {state.message or 'no message'}"
        for name, state in states.items()
        if state.type != StateType.COMPLETED
    ]
    if failed:
        raise ChildRunError("; ".join(failed))
    results: dict[str, Any] = {}
    for name, state in states.items():
        try:
            results[name] = state.result()
        except Exception:
            # The result lives in the child's result storage; a worker on another
            # machine may keep it where this one cannot read. The run still completed.
            results[name] = None
    return results


def _wait(runs: Mapping[str, FlowRun], deployments: Mapping[str, str]) -> dict[str, State[Any]]:
    """Poll every child to a final state; fail if one sits unstarted past the limit."""
    settings = get_settings()
    limit = settings.child_start_timeout_seconds
    states: dict[str, State[Any]] = {}
    unstarted_since: dict[str, float] = {}
    crashed_since: dict[str, float] = {}
    with get_client(sync_client=True) as client:
        while True:
            for name, run in runs.items():
                if name in states:
                    continue
                current = _read_run(client, run.id)
                state = current.state
                if state is not None and state.type == StateType.CRASHED:
                    # A child whose machine died is put back to its pool by the crash
                    # rerun automation (deployments/crashes.py) a moment later: only a
                    # child still Crashed after the grace has ended for good.
                    since = crashed_since.setdefault(name, time.monotonic())
                    if time.monotonic() - since > CRASH_GRACE_SECONDS:
                        states[name] = state
                elif state is not None and state.type in FINAL:
                    states[name] = state
                elif state is None or state.type in NOT_STARTED:
                    # The clock restarts when a run is handed back to its pool.
                    since = unstarted_since.setdefault(name, time.monotonic())
                    if time.monotonic() - since > limit:
                        raise ChildNotStarted(
                            f"no worker picked up {deployments[name]} on work pool "
                            f"{current.work_pool_name!r} within {limit:g} s "
                            f"(run {current.name} is {current.state_name})"
                        )
                else:
                    unstarted_since.pop(name, None)
                if state is None or state.type != StateType.CRASHED:
                    crashed_since.pop(name, None)
            if len(states) == len(runs):
                return states
            time.sleep(settings.child_poll_seconds)


def _free_slot(waiting_for: Sequence[str]) -> None:
    """Set this flow run Paused while it only waits, so its work pool's slot goes to the
    next run: a pool counts Pending and Running runs only. The pause is in place (no
    reschedule): the process goes on polling, its hooks, heartbeats and cancellation work
    as before, and the run ends from Paused without taking a slot again (leaving Paused
    for Running would count one more run in `run_count`, which crash reruns read)."""
    run_id = flow_run.get_id()
    if not run_id:
        return  # not a flow run: nothing holds a slot
    paused: State[Any] = Paused(
        reschedule=False,
        pause_key=f"children-{uuid.uuid4()}",  # a pause key fires once per run
        message=f"waiting for {' and '.join(waiting_for)}; its pool slot is free meanwhile",
    )
    try:
        with get_client(sync_client=True) as client:
            answer = client.set_flow_run_state(UUID(run_id), paused)
    except Exception as exc:
        _logger().warning("waiting in the pool's slot: pausing the run failed: %r", exc)
        return
    if answer.status != SetStateStatus.ACCEPT:
        # Not Running any more (being cancelled): its worker is about to stop it.
        reason = getattr(answer.details, "reason", None) or answer.status.value
        _logger().info("waiting in the pool's slot: the run was not paused (%s)", reason)


def _read_run(client: SyncPrefectClient, run_id: UUID) -> FlowRun:
    """A child's run; a transient Prefect API error is retried with a bounded backoff,
    beyond the retries of Prefect's own client (which leave out 500 and 504)."""
    settings = get_settings()
    failures = 0
    while True:
        try:
            return client.read_flow_run(run_id)
        except Exception as exc:
            if failures >= settings.child_read_retries or not _transient_api_error(exc):
                raise
            wait = min(settings.child_poll_seconds * 2**failures, MAX_READ_BACKOFF_SECONDS)
            failures += 1
            _logger().warning(
                "reading child run %s failed (%r); again in %.1f s", run_id, exc, wait
            )
            time.sleep(wait)


def _transient_api_error(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):  # refused, reset, dropped, timed out
        return True
    if isinstance(exc, httpx.HTTPStatusError):  # PrefectHTTPStatusError is one
        code = exc.response.status_code
        return code >= 500 or code == 429
    return False


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("storyloom.fanout")


def cancel_children(flow: Any, flow_run: FlowRun, state: State[Any]) -> None:
    """on_failure / on_cancellation / on_crashed hook: Prefect does not cascade a
    cancellation to runs started with run_deployment, and a parent that failed will
    publish nothing, so the parent cancels its unfinished children itself."""
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(FINAL))),
            )
        )
        _cancel(client, children, f"parent {flow_run.name} was {state.name}")


def _cancel_quietly(run_ids: list[UUID], why: str) -> None:
    """Cancel the unfinished runs among these; an error here is logged, never raised
    over the error that made the parent stop (its on_failure hook tries again)."""
    if not run_ids:
        return
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=run_ids),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(FINAL))),
                )
            )
            _cancel(client, runs, why)
    except Exception as exc:
        _logger().warning("could not cancel the children: %r", exc)


def _cancel(client: SyncPrefectClient, runs: Sequence[FlowRun], why: str) -> None:
    for run in runs:
        # A run not yet started goes straight to Cancelled; a running one to
        # Cancelling, and its worker stops it (its paid tasks check before each call).
        client.set_flow_run_state(run.id, Cancelling(message=why))


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

