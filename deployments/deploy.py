"""The deployments of prefect.yaml, made through the client with no build step.

Equivalent to `prefect deploy --all` for this project, but idempotent and reporting:
each deployment is compared field by field with what the server has, and only what
differs is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import (
    DeploymentScheduleCreate,
    DeploymentScheduleUpdate,
    DeploymentUpdate,
)
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from deployments.project import DeploymentEntry, ProjectFile, pull_steps
from deployments.report import Outcome, SetupItem

# The slug that marks the schedule setup owns, so it is recognised on the next run.
SCHEDULE_SLUG = "storyloom-setup"


@dataclass(frozen=True)
class DesiredDeployment:
    """A deployment as the server should hold it."""

    flow_name: str
    name: str
    entrypoint: str
    work_pool_name: str
    work_queue_name: str | None
    description: str
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    tags: list[str]
    pull_steps: list[dict[str, Any]]
    parameter_openapi_schema: dict[str, Any]
    # None: schedules are the operator's (setup leaves them alone); a list: exactly these.
    schedules: list[CronSchedule] | None = None
    enforce_parameter_schema: bool = True

    @property
    def full_name(self) -> str:
        """`<flow>/<deployment>`, as `prefect deployment run` takes it."""
        return f"{self.flow_name}/{self.name}"


def load_flow(root: Path, entry: DeploymentEntry) -> Flow[..., Any]:
    """The flow object behind an entrypoint, loaded the way a worker will load it.

    A worker runs the pull steps, then executes the entrypoint's file as a script; doing
    the same here means a flow that would not load on a worker fails setup instead.
    """
    # Raises MissingFlowError when the function is not a flow, ScriptError when the
    # file does not import.
    flow: Flow[..., Any] = load_flow_from_entrypoint(
        f"{root / entry.source}:{entry.function}", use_placeholder_flow=False
    )
    return flow


def desired_deployment(
    project: ProjectFile,
    entry: DeploymentEntry,
    flow: Flow[..., Any],
    root: Path,
    schedules: list[CronSchedule] | None,
    env: Mapping[str, str] | None = None,
) -> DesiredDeployment:
    """What one prefect.yaml entry asks for, with the schema taken from the flow's signature.

    `env` is added to the job variables' `env` (over prefect.yaml's): every worker type
    passes it to the flow-run process.
    """
    job_variables = dict(entry.work_pool.job_variables)
    if env:
        job_variables["env"] = {**job_variables.get("env", {}), **env}
    return DesiredDeployment(
        flow_name=flow.name,
        name=entry.name,
        entrypoint=entry.entrypoint,
        work_pool_name=entry.work_pool.name,
        work_queue_name=entry.work_pool.work_queue_name,
        description=entry.description or flow.description or "",
        parameters=entry.parameters,
        job_variables=job_variables,
        tags=entry.tags,
        pull_steps=pull_steps(project, entry, root),
        # The UI builds its run form from this schema and the server validates
        # parameters against it (enforce_parameter_schema).
        parameter_openapi_schema=parameter_schema(flow).model_dump(mode="json"),
        schedules=schedules,
    )


def differences(current: DeploymentResponse, desired: DesiredDeployment) -> dict[str, Any]:
    """Field → wanted value, for every managed field the server holds differently."""
    wanted: dict[str, tuple[Any, Any]] = {
        "entrypoint": (current.entrypoint, desired.entrypoint),
        "work_pool_name": (current.work_pool_name, desired.work_pool_name),
        "description": (current.description or "", desired.description),
        "parameters": (current.parameters, desired.parameters),
        "job_variables": (current.job_variables, desired.job_variables),
        "tags": (current.tags, desired.tags),
        "pull_steps": (current.pull_steps, desired.pull_steps),
        "parameter_openapi_schema": (
            current.parameter_openapi_schema,
            desired.parameter_openapi_schema,
        ),
        "enforce_parameter_schema": (
            current.enforce_parameter_schema,
            desired.enforce_parameter_schema,
        ),
    }
    # Without a queue in prefect.yaml the server picks the pool's default queue.
    if desired.work_queue_name is not None:
        wanted["work_queue_name"] = (current.work_queue_name, desired.work_queue_name)
    if desired.schedules is not None:
        have = [(s.schedule, s.active, s.slug) for s in current.schedules]
        want = [(s, True, SCHEDULE_SLUG) for s in desired.schedules]
        wanted["schedules"] = (have, want)
    return {name: want for name, (have, want) in wanted.items() if have != want}


def ensure_deployment(
    client: SyncPrefectClient, desired: DesiredDeployment, *, dry_run: bool
) -> SetupItem:
    """Create the deployment, or update the fields that differ."""
    note = f"pool {desired.work_pool_name}, {desired.entrypoint}"
    if desired.schedules:
        note += ", " + ", ".join(f"cron {s.cron} {s.timezone}" for s in desired.schedules)
    try:
        current = client.read_deployment_by_name(desired.full_name)
    except ObjectNotFound:
        current = None

    if current is None:
        if not dry_run:
            flow_id = client.create_flow_from_name(desired.flow_name)
            client.create_deployment(
                flow_id=flow_id,
                name=desired.name,
                entrypoint=desired.entrypoint,
                work_pool_name=desired.work_pool_name,
                work_queue_name=desired.work_queue_name,
                description=desired.description,
                parameters=desired.parameters,
                job_variables=desired.job_variables,
                tags=desired.tags,
                pull_steps=desired.pull_steps,
                parameter_openapi_schema=desired.parameter_openapi_schema,
                enforce_parameter_schema=desired.enforce_parameter_schema,
                schedules=[
                    DeploymentScheduleCreate(schedule=s, active=True, slug=SCHEDULE_SLUG)
                    for s in desired.schedules or []
                ],
            )
        return SetupItem(
            kind="deployment", name=desired.full_name, outcome=Outcome.CREATED, note=note
        )

    changed = differences(current, desired)
    if not changed:
        return SetupItem(
            kind="deployment", name=desired.full_name, outcome=Outcome.UNCHANGED, note=note
        )
    if not dry_run:
        update = dict(changed)
        if "schedules" in update:
            # The server replaces all of a deployment's schedules with the list sent.
            update["schedules"] = [
                DeploymentScheduleUpdate(schedule=s, active=True, slug=SCHEDULE_SLUG, parameters={})
                for s in desired.schedules or []
            ]
        client.update_deployment(current.id, DeploymentUpdate(**update))
    return SetupItem(
        kind="deployment",
        name=desired.full_name,
        outcome=Outcome.UPDATED,
        changes=sorted(changed),
        note=note,
    )
