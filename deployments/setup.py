"""`storyloom setup`: everything production needs on a Prefect server, idempotently.

Work pools with their limits, two global concurrency limits per external API, the
deployments of prefect.yaml (their runs send heartbeats), an alert on failed runs, and
crash handling: runs gone silent are marked Crashed and crashed generation runs rerun
(deployments/crashes.py). Each object is read first and
written only where it differs from what settings and prefect.yaml ask for, so a second
run reports everything unchanged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.actions import ActionTypes
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from deployments.alerts import (
    desired_automation,
    ensure_automation,
    ensure_webhook_block,
    notification_action,
    notification_block_id,
    webhook_action,
)
from deployments.config import (
    AUTOMATION_NAME,
    CLOSE_AUTOMATION,
    CLOSE_DEPLOYMENT,
    HEARTBEAT_ENV,
    NIGHTLY_DEPLOYMENT,
    RERUN_AUTOMATION,
    SILENT_RUN_AUTOMATION,
    api_limit_sizes,
    pool_limits,
    reprocess_schedule,
)
from deployments.crashes import close_automation, rerun_automation, silent_run_automation
from deployments.deploy import (
    DesiredDeployment,
    desired_deployment,
    ensure_deployment,
    load_flow,
)
from deployments.limits import ensure_api_limit, ensure_work_pool
from deployments.project import ProjectFile, project_root, read_project
from deployments.report import Outcome, SetupItem, SetupReport
from storyloom.settings import Settings, read_settings

# Stands in for a webhook block a dry run would create, so the automation can still be
# compared (and is then reported as changing, which it would).
_NOT_YET_CREATED = UUID(int=0)


def run_setup(
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
    root: Path | None = None,
) -> SetupReport:
    """Create or update what production needs; with dry_run, only report what would change.

    `settings` defaults to the process's settings (STORYLOOM_* variables), `root` to the folder
    holding prefect.yaml. Talks to the server PREFECT_API_URL names.
    """
    _refuse_running_loop()
    settings = settings or read_settings()
    root = root or project_root()
    # Everything that can fail without the server fails before anything is written: a
    # prefect.yaml setup cannot honour, a flow file that does not load.
    planned = _plan_deployments(read_project(root), root, settings)
    report = SetupReport(dry_run=dry_run, api_url=get_current_settings().api.url)
    with get_client(sync_client=True) as client:
        for name, limit in pool_limits(settings).items():
            report.add(ensure_work_pool(client, name, limit, settings.pool_type, dry_run=dry_run))
        for name, size in api_limit_sizes(settings).items():
            report.add(ensure_api_limit(client, name, size, dry_run=dry_run))
        for plan in planned:
            report.add(_deploy(client, plan, settings, dry_run=dry_run))
        _alerts(client, report, settings, dry_run=dry_run)
        _crash_handling(client, report, planned, settings, dry_run=dry_run)
    return report


def _plan_deployments(
    project: ProjectFile, root: Path, settings: Settings
) -> list[DesiredDeployment | SetupItem]:
    """Each prefect.yaml entry as the deployment it asks for, or why it is skipped."""
    planned: list[DesiredDeployment | SetupItem] = []
    for entry in project.deployments:
        if not (root / entry.source).is_file():
            # A flow still being written (reprocess) must not block the others. Its flow
            # name is unknown without the file; the function's name stands in for it.
            planned.append(
                SetupItem(
                    kind="deployment",
                    name=f"{entry.function}/{entry.name}",
                    outcome=Outcome.SKIPPED,
                    note=f"{entry.source} does not exist yet",
                )
            )
            continue
        flow = load_flow(root, entry)
        full_name = f"{flow.name}/{entry.name}"
        schedules = [reprocess_schedule(settings)] if full_name == NIGHTLY_DEPLOYMENT else None
        # Heartbeats at the pace the silent-run automation expects, whatever worker runs it.
        env = {HEARTBEAT_ENV: str(settings.heartbeat_seconds)}
        planned.append(desired_deployment(project, entry, flow, root, schedules, env))
    return planned


def _deploy(
    client: SyncPrefectClient,
    plan: DesiredDeployment | SetupItem,
    settings: Settings,
    *,
    dry_run: bool,
) -> SetupItem:
    if isinstance(plan, SetupItem):
        return plan
    pool = plan.work_pool_name
    if pool not in pool_limits(settings) and not _pool_exists(client, pool):
        return SetupItem(
            kind="deployment",
            name=plan.full_name,
            outcome=Outcome.FAILED,
            note=f"work pool {pool!r} does not exist and setup does not manage it",
        )
    return ensure_deployment(client, plan, dry_run=dry_run)


def _alerts(
    client: SyncPrefectClient, report: SetupReport, settings: Settings, *, dry_run: bool
) -> None:
    actions: list[ActionTypes] = []
    if settings.alert_webhook_url is not None:
        item, block_id = ensure_webhook_block(
            client, settings.alert_webhook_block, settings.alert_webhook_url, dry_run=dry_run
        )
        report.add(item)
        actions.append(webhook_action(block_id or _NOT_YET_CREATED))
    if settings.alert_notification_block is not None:
        reference = settings.alert_notification_block
        found = notification_block_id(client, reference)
        if found is None:
            report.add(
                SetupItem(
                    kind="block",
                    name=reference,
                    outcome=Outcome.FAILED,
                    note="no such notification block (STORYLOOM_ALERT_NOTIFICATION_BLOCK)",
                )
            )
        else:
            report.add(
                SetupItem(
                    kind="block",
                    name=reference,
                    outcome=Outcome.UNCHANGED,
                    note="notification block, used as it is",
                )
            )
            actions.append(notification_action(found))

    if not actions:
        configured = settings.alert_webhook_url or settings.alert_notification_block
        note = (
            "its notification block is missing"
            if configured
            else "no alert target: set STORYLOOM_ALERT_WEBHOOK_URL"
            " or STORYLOOM_ALERT_NOTIFICATION_BLOCK"
        )
        if client.read_automations_by_name(AUTOMATION_NAME):
            note += "; the existing automation is left as it is"
        report.add(
            SetupItem(kind="automation", name=AUTOMATION_NAME, outcome=Outcome.SKIPPED, note=note)
        )
        return
    report.add(ensure_automation(client, desired_automation(actions), dry_run=dry_run))


def _crash_handling(
    client: SyncPrefectClient,
    report: SetupReport,
    planned: list[DesiredDeployment | SetupItem],
    settings: Settings,
    *,
    dry_run: bool,
) -> None:
    """The two crash automations, scoped to the deployments setup manages."""
    watched: list[UUID] = []
    rerun: list[UUID] = []
    close: UUID | None = None
    for plan in planned:
        if isinstance(plan, SetupItem):
            continue
        try:
            found = client.read_deployment_by_name(plan.full_name).id
        except ObjectNotFound:
            continue  # a dry run that would create it, or a deployment that failed
        watched.append(found)
        if plan.full_name == CLOSE_DEPLOYMENT:
            close = found
        # Reprocess is left Crashed: it submits story runs, and a rerun could repeat them.
        # Close is not watched for its own ending: it would start itself.
        elif plan.full_name != NIGHTLY_DEPLOYMENT:
            rerun.append(found)
    if not watched and not dry_run:
        for name in (SILENT_RUN_AUTOMATION, RERUN_AUTOMATION, CLOSE_AUTOMATION):
            report.add(
                SetupItem(
                    kind="automation",
                    name=name,
                    outcome=Outcome.SKIPPED,
                    note="no deployment to watch",
                )
            )
        return
    after = settings.crashed_after_seconds
    silent = silent_run_automation(SILENT_RUN_AUTOMATION, watched, after)
    note = (
        f"{len(watched)} deployment(s), heartbeat every {settings.heartbeat_seconds} s:"
        f" Crashed after {after} s of silence"
    )
    report.add(ensure_automation(client, silent, dry_run=dry_run, note=note))

    reruns = settings.crash_reruns
    again = rerun_automation(RERUN_AUTOMATION, rerun, reruns)
    if reruns == 0:
        # Kept, switched off: turning reruns back on is one setting away.
        again = again.model_copy(update={"enabled": False})
        note = "off (STORYLOOM_CRASH_RERUNS=0): crashed runs stay Crashed"
    else:
        note = f"{len(rerun)} deployment(s): Crashed → AwaitingRetry, up to {reruns} starts"
    report.add(ensure_automation(client, again, dry_run=dry_run, note=note))

    if close is None:
        report.add(
            SetupItem(
                kind="automation",
                name=CLOSE_AUTOMATION,
                outcome=Outcome.SKIPPED,
                note=f"no {CLOSE_DEPLOYMENT} deployment yet",
            )
        )
        return
    closing = close_automation(CLOSE_AUTOMATION, rerun, reruns, close)
    note = f"{len(rerun)} deployment(s): Crashed past {reruns} start(s) or Cancelled → close"
    report.add(ensure_automation(client, closing, dry_run=dry_run, note=note))


def _pool_exists(client: SyncPrefectClient, name: str) -> bool:
    try:
        client.read_work_pool(name)
    except ObjectNotFound:
        return False
    return True


def _refuse_running_loop() -> None:
    # Prefect's Block.save answers with a coroutine when an event loop runs in the
    # calling thread; setup is synchronous throughout, so it says so up front.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("run_setup blocks: call it outside an event loop (asyncio.to_thread)")
