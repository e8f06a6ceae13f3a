"""Crash handling: a run whose machine died is marked Crashed, then run again.

A worker killed with SIGKILL (or a machine that dies) reports nothing: Prefect leaves
its run Running for good. Prefect's answer (docs: v3/advanced/detect-zombie-flows) is
flow-run heartbeats plus an automation, and that is what setup makes:

- the deployments setup manages carry PREFECT_FLOWS_HEARTBEAT_FREQUENCY in their job
  variables' env, so whichever worker runs them, the flow-run process sends a
  `prefect.flow-run.heartbeat` event every `heartbeat_seconds`;
- "silent run crashed": after a heartbeat of one of those deployments' runs, expect
  another heartbeat, or a state in which a run stops beating, within
  `crashed_after_seconds`; when neither comes, set the run Crashed. The work pool
  counts only Pending, Running and Cancelling runs, so its slot frees at once;
- "crashed run rerun": when a story, illustrations or narration run ends Crashed
  (silent, or its process died under a living worker) while its run count is at most
  `crash_reruns`, set the same run AwaitingRetry. A worker takes it again; the flow
  finds its running generation by flow run id and continues it, its children by their
  idempotency keys, its paid work in the task cache.

The run count (Prefect counts every start) is the guard against a crash loop: a run
that keeps crashing stays Crashed after `crash_reruns` starts, and the alert fires.

- "ended run's generation closed": when a story, illustrations or narration run ends
  Crashed or Cancelled, start generation/close (flows/closing.py) for it. Past the guard
  (or cancelled while its process was gone) nobody else would close its generation: the
  flow marks it failed or cancelled and deletes the files only it used. Within the
  guard the flow leaves it alone: the rerun continues it.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, Posture
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment

# Events after which a run sends no more heartbeats and is not dead: its final states,
# Cancelling (Prefect's own cancelling timeout finishes a dead one), and the states of a
# run handed back to its pool or paused.
STOPS_BEATING = frozenset(
    {
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.Cancelling",
        "prefect.flow-run.Scheduled",
        "prefect.flow-run.AwaitingRetry",
        "prefect.flow-run.Paused",
        "prefect.flow-run.Suspended",
    }
)
HEARTBEAT = "prefect.flow-run.heartbeat"
CRASHED = "prefect.flow-run.Crashed"
CANCELLED = "prefect.flow-run.Cancelled"

RERUN_MESSAGE = "Rerun after a crash: the run continues its generation (storyloom setup)"


def silent_message(crashed_after_seconds: int) -> str:
    """The state message of a run marked Crashed for going silent."""
    return (
        f"No heartbeat for {crashed_after_seconds} s: its worker or machine is gone"
        " (storyloom crash detection)"
    )


def silent_run_automation(
    name: str, deployment_ids: list[UUID], crashed_after_seconds: int
) -> AutomationCore:
    """Mark Crashed a run of these deployments that stops sending heartbeats."""
    return AutomationCore(
        name=name,
        description=(
            "Made by `storyloom setup`: a flow run of storyloom's deployments that sends"
            f" no heartbeat for {crashed_after_seconds} s is marked Crashed."
        ),
        enabled=True,
        tags=[],
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *STOPS_BEATING},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_deployments(deployment_ids),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crashed_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message=silent_message(crashed_after_seconds),
            )
        ],
        actions_on_trigger=[],
        actions_on_resolve=[],
    )


def rerun_automation(name: str, deployment_ids: list[UUID], reruns: int) -> AutomationCore:
    """Put a crashed run of these deployments back in its pool while it has started at
    most `reruns` times."""
    return AutomationCore(
        name=name,
        description=(
            "Made by `storyloom setup`: a crashed story, illustrations or narration run"
            f" goes back to its pool (AwaitingRetry), up to {reruns} starts in all."
        ),
        enabled=True,
        tags=[],
        trigger=EventTrigger(
            expect={CRASHED},
            match={
                "prefect.resource.id": "prefect.flow-run.*",
                # The run count as it crashed: one more start per rerun.
                "prefect.run-count": [str(n) for n in range(1, reruns + 1)],
            },
            match_related=_deployments(deployment_ids),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            # Crashed → Scheduled is an allowed transition for a run with a deployment
            # (HandleFlowTerminalStateTransitions): no force needed.
            ChangeFlowRunState(
                state=StateType.SCHEDULED, name="AwaitingRetry", message=RERUN_MESSAGE
            )
        ],
        actions_on_trigger=[],
        actions_on_resolve=[],
    )


def close_automation(
    name: str, deployment_ids: list[UUID], reruns: int, close_deployment_id: UUID
) -> AutomationCore:
    """Start generation/close for every run of these deployments that ends Crashed or
    Cancelled; the flow closes the run's generation unless the run will be rerun (it
    started at most `reruns` times and ended Crashed)."""
    return AutomationCore(
        name=name,
        description=(
            "Made by `storyloom setup`: a story, illustrations or narration run that ends"
            " Crashed past its reruns, or Cancelled with no process left to notice, has"
            " its generation closed within a minute (deployment generation/close)."
        ),
        enabled=True,
        tags=[],
        trigger=EventTrigger(
            expect={CRASHED, CANCELLED},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_deployments(deployment_ids),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=close_deployment_id,
                # Rendered by the server from the event: the run that ended.
                parameters={"flow_run": "{{ event.resource.id }}", "reruns": reruns},
            )
        ],
        actions_on_trigger=[],
        actions_on_resolve=[],
    )


def _deployments(ids: list[UUID]) -> dict[str, str | list[str]]:
    # Only these deployments' runs beat at heartbeat_seconds; any other run on the server
    # beats at Prefect's default (180 s) and would be crashed by mistake.
    return {
        "prefect.resource.role": "deployment",
        "prefect.resource.id": [f"prefect.deployment.{i}" for i in sorted(ids, key=str)],
    }
