"""The crash automations on a real Prefect server: silence → Crashed → rerun, and the
guard that ends a crash loop.

No worker and no flow process: the test plays the flow run's part, moving its state and
sending its heartbeats as events, so each step takes seconds. The automations are the
ones setup makes (deployments/crashes.py), with a 10 s window (Prefect's minimum for a
proactive trigger) and scoped to a deployment of this test's own, so the ones setup
makes for storyloom's deployments never act on these runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import State, StateType
from prefect.events import Event, RelatedResource, Resource
from prefect.events.clients import get_events_client
from prefect.states import Running

from deployments.alerts import ensure_automation
from deployments.crashes import (
    HEARTBEAT,
    RERUN_MESSAGE,
    rerun_automation,
    silent_message,
    silent_run_automation,
)

pytestmark = [pytest.mark.flows, pytest.mark.timeout(240)]

WINDOW = 10  # seconds of silence before Crashed
SILENT = "test: silent run crashed"
RERUN = "test: crashed run rerun"


@pytest.fixture(scope="module")
def deployment_id() -> Iterator[UUID]:
    """A deployment with the crash automations of setup (one rerun), deleted after."""
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("beating")
        deployment = client.create_deployment(flow_id=flow_id, name="crash-test")
        silent = silent_run_automation(SILENT, [deployment], WINDOW)
        ensure_automation(client, silent, dry_run=False)
        ensure_automation(client, rerun_automation(RERUN, [deployment], 1), dry_run=False)
        try:
            yield deployment
        finally:
            for name in (SILENT, RERUN):
                for automation in client.read_automations_by_name(name):
                    client.delete_automation(automation.id)
            client.delete_deployment(deployment)


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


def beat(flow_run_id: UUID, deployment: UUID) -> None:
    """The heartbeat a flow-run process sends (prefect/flow_engine.py)."""
    deployment_resource = {
        "prefect.resource.id": f"prefect.deployment.{deployment}",
        "prefect.resource.role": "deployment",
    }
    event = Event(
        event=HEARTBEAT,
        resource=Resource({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"}),
        related=[RelatedResource(deployment_resource)],
    )

    async def send() -> None:
        async with get_events_client() as events:
            await events.emit(event)

    asyncio.run(send())


def start(client: SyncPrefectClient, flow_run_id: UUID) -> None:
    """What a worker's flow process does first: Running (one more start in run_count)."""
    client.set_flow_run_state(flow_run_id, Running(), force=True)


def wait_for(
    client: SyncPrefectClient, flow_run_id: UUID, name: str, nth: int, timeout: float
) -> State:
    """The run's `nth` state called `name`, from its history: a state that lasted less
    than a poll (Crashed, before the rerun) is not missed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [s for s in client.read_flow_run_states(flow_run_id) if s.name == name]
        if len(seen) >= nth:
            return seen[nth - 1]
        time.sleep(0.5)
    now = client.read_flow_run(flow_run_id).state_name
    raise AssertionError(f"{flow_run_id}: no {name} #{nth} after {timeout} s (it is {now})")


@pytest.fixture
def other_deployment(client: SyncPrefectClient) -> Iterator[UUID]:
    """A deployment the automations do not watch."""
    flow_id = client.create_flow_from_name("beating")
    other = client.create_deployment(flow_id=flow_id, name="not-watched")
    yield other
    client.delete_deployment(other)


def test_a_silent_run_is_crashed_rerun_once_and_then_left_crashed(
    deployment_id: UUID, other_deployment: UUID, client: SyncPrefectClient
) -> None:
    run = client.create_flow_run_from_deployment(deployment_id)
    start(client, run.id)
    # Another deployment's run goes silent as well: it is none of these automations'
    # business (its heartbeats may come at Prefect's default pace, 180 s).
    unwatched = client.create_flow_run_from_deployment(other_deployment)
    start(client, unwatched.id)
    beat(unwatched.id, other_deployment)

    # Beating every 4 s for 12 s (longer than the window): still Running.
    for _ in range(4):
        beat(run.id, deployment_id)
        time.sleep(4)
    assert client.read_flow_run(run.id).state_type == StateType.RUNNING

    # Silence: Crashed once the window has passed (proactive triggers are evaluated
    # every 5 s), then back in the pool as the same run.
    silent_since = time.monotonic()
    crashed = wait_for(client, run.id, "Crashed", 1, timeout=WINDOW + 30)
    assert time.monotonic() - silent_since >= WINDOW - 4 - 1  # not before the window
    assert crashed.type == StateType.CRASHED
    assert crashed.message == silent_message(WINDOW)
    rerun = wait_for(client, run.id, "AwaitingRetry", 1, timeout=30)
    assert (rerun.type, rerun.message) == (StateType.SCHEDULED, RERUN_MESSAGE)
    assert client.read_flow_run(run.id).run_count == 1

    # The second start crashes too: with one rerun allowed, it stays Crashed.
    start(client, run.id)
    beat(run.id, deployment_id)
    wait_for(client, run.id, "Crashed", 2, timeout=WINDOW + 30)
    time.sleep(8)
    again = client.read_flow_run(run.id)
    assert (again.state_type, again.run_count) == (StateType.CRASHED, 2)
    assert client.read_flow_run(unwatched.id).state_type == StateType.RUNNING
