"""Fan-out from `story` to its child flows, and the wait for all of them.

Two modes, the same flows. Under a deployment the children are started as runs of their
own deployments (`illustrations/generate` on the `images` pool, `narration/generate` on
`audio`), nested under the parent in the UI; in the demo and the tests they run in this
process as subflows, side by side in threads (each thread with a copy of the parent's
Prefect context, so they nest under it too).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, TypeVar, cast

from prefect import Flow, Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture
from prefect.runtime import deployment
from prefect.states import Cancelling

from storyloom.providers.errors import AccountError
from storyloom.settings import get_settings

R = TypeVar("R")
Child = tuple[Flow[..., Any], Mapping[str, Any]]
# Every child flow has one deployment, named like this: `illustrations/generate`.
CHILD_DEPLOYMENT = "generate"
FINAL = {
    StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED,
}  # fmt: skip


class ChildRunError(RuntimeError):
    """A child run did not complete; the parent fails with its reason."""


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
            name: pool.submit(contextvars.copy_context().run, partial(fn, **params))
            for name, (fn, params) in wanted.items()
        }
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {name: f.result() for name, f in futures.items()}


def _by_deployment(wanted: Mapping[str, Child]) -> dict[str, Any]:
    # A parent handed back by a stopping worker reruns with the same generation: the
    # key gives it the children it already started instead of starting them again.
    runs: dict[str, FlowRun] = {
        name: cast(
            FlowRun,
            run_deployment(
                f"{fn.name}/{CHILD_DEPLOYMENT}",
                parameters=dict(params),
                timeout=0,
                as_subflow=True,  # nested under the parent, found by cancel_children
                idempotency_key=f"{params.get('generation_id')}:{name}",
            ),
        )
        for name, (fn, params) in wanted.items()
    }
    poll = get_settings().child_poll_seconds
    states: dict[str, State[Any]] = {}
    with get_client(sync_client=True) as client:
        while True:
            for name, run in runs.items():
                if name not in states:
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.type in FINAL:
                        states[name] = state
            if len(states) == len(runs):
                break
            time.sleep(poll)
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


def cancel_children(flow: Any, flow_run: FlowRun, state: State[Any]) -> None:
    """on_cancellation / on_crashed hook: Prefect does not cascade a cancellation to runs
    started with run_deployment, so the parent cancels its children itself."""
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=list(FINAL))),
            )
        )
        for child in children:
            client.set_flow_run_state(
                child.id, Cancelling(message=f"parent {flow_run.name} was {state.name}")
            )


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

