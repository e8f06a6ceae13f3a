"""The alert on failed or crashed runs: an automation calling a webhook or a notifier.

prefect.yaml `triggers:` can only run a deployment, so the automation is made here, from
Python (see shared/reference/prefect.md).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import (
    AutomationCore,
    CallWebhook,
    EventTrigger,
    Posture,
    SendNotification,
)
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import SyncPrefectClient
from prefect.events.actions import ActionTypes
from prefect.exceptions import ObjectNotFound
from prefect.types import SecretDict
from pydantic import SecretStr

from deployments.config import AUTOMATION_NAME, mask_url
from deployments.report import Outcome, SetupItem

# What fires the alert: a flow run's final failure. Retries pass through AwaitingRetry,
# not Failed, so a run that heals on retry sends nothing.
ALERT_EVENTS = frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"})

WEBHOOK_METHOD = "POST"
WEBHOOK_HEADERS = {"Content-Type": "application/json"}

# Rendered by the server with Jinja for each event; `tojson` keeps a state message with
# quotes or newlines from breaking the JSON.
_TITLE = "storyloom: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"

WEBHOOK_PAYLOAD = "\n".join(
    [
        "{",
        '  "text": {{ ("storyloom: " ~ flow.name ~ " run " ~ flow_run.name'
        ' ~ " " ~ flow_run.state.name) | tojson }},',
        '  "flow": {{ flow.name | tojson }},',
        '  "flow_run_id": {{ flow_run.id | string | tojson }},',
        '  "flow_run_name": {{ flow_run.name | tojson }},',
        '  "state": {{ flow_run.state.name | tojson }},',
        '  "message": {{ flow_run.state.message | tojson }},',
        '  "parameters": {{ flow_run.parameters | tojson }},',
        '  "url": {{ flow_run | ui_url | tojson }}',
        "}",
    ]
)

NOTIFICATION_SUBJECT = _TITLE
NOTIFICATION_BODY = "\n".join(
    [
        "Flow run {{ flow.name }}/{{ flow_run.name }} entered `{{ flow_run.state.name }}`"
        " at {{ flow_run.state.timestamp }}.",
        "Parameters: {{ flow_run.parameters }}",
        "State message: {{ flow_run.state.message }}",
        "Flow run URL: {{ flow_run|ui_url }}",
    ]
)


def ensure_webhook_block(
    client: SyncPrefectClient, name: str, url: SecretStr, *, dry_run: bool
) -> tuple[SetupItem, UUID | None]:
    """A Webhook block posting JSON to `url`; its id (None in a dry run that would create it)."""
    where = f"POST {mask_url(url.get_secret_value())}"
    try:
        document = client.read_block_document_by_name(name, "webhook", include_secrets=True)
    except ObjectNotFound:
        document = None

    if document is not None:
        data = document.data
        changes = [
            field
            for field, current, wanted in (
                ("url", data.get("url"), url.get_secret_value()),
                ("method", data.get("method"), WEBHOOK_METHOD),
                ("headers", data.get("headers"), WEBHOOK_HEADERS),
            )
            if current != wanted
        ]
        # The old and new URL stay out of the report: only which fields moved.
        outcome = Outcome.UPDATED if changes else Outcome.UNCHANGED
        block_id: UUID | None = document.id
    else:
        changes = []
        outcome = Outcome.CREATED
        block_id = None

    if outcome is not Outcome.UNCHANGED and not dry_run:
        block = Webhook(url=url, method=WEBHOOK_METHOD, headers=SecretDict(dict(WEBHOOK_HEADERS)))
        # Block.save registers the block type on a server that lacks it; called from
        # run_setup, which has made sure no event loop runs in this thread, it saves
        # synchronously and returns the id.
        saved = block.save(name, overwrite=True)
        if not isinstance(saved, UUID):
            saved.close()  # never to be awaited; closing it spares a "never awaited" warning
            raise RuntimeError("Block.save returned a coroutine: called inside an event loop")
        block_id = saved
    item = SetupItem(kind="block", name=name, outcome=outcome, changes=changes, note=where)
    return item, block_id


def notification_block_id(client: SyncPrefectClient, reference: str) -> UUID | None:
    """The id of an existing notification block named "<block-type-slug>/<name>"."""
    slug, name = reference.split("/", 1)
    try:
        return client.read_block_document_by_name(name, slug, include_secrets=False).id
    except ObjectNotFound:
        return None


def webhook_action(block_id: UUID) -> CallWebhook:
    """Post the run's name, state and link to the webhook block."""
    return CallWebhook(block_document_id=block_id, payload=WEBHOOK_PAYLOAD)


def notification_action(block_id: UUID) -> SendNotification:
    """Send the run's name, state and link through a notification block."""
    return SendNotification(
        block_document_id=block_id, subject=NOTIFICATION_SUBJECT, body=NOTIFICATION_BODY
    )


def desired_automation(actions: list[ActionTypes]) -> AutomationCore:
    """The automation "storyloom: run failed" with the given actions."""
    return AutomationCore(
        name=AUTOMATION_NAME,
        description="Made by `storyloom setup`: tells someone when a flow run fails or crashes.",
        enabled=True,
        tags=[],
        trigger=EventTrigger(
            expect=set(ALERT_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # One alert per run, whatever else fails at the same moment.
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=list(actions),
        actions_on_trigger=[],
        actions_on_resolve=[],
    )


# The fields setup owns; anything else on the automation is left to the operator.
_COMPARED = (
    "description",
    "enabled",
    "tags",
    "trigger",
    "actions",
    "actions_on_trigger",
    "actions_on_resolve",
)


def ensure_automation(
    client: SyncPrefectClient, desired: AutomationCore, *, dry_run: bool, note: str | None = None
) -> SetupItem:
    """Create the automation, or bring the one with its name up to date.

    `note` says what it does in the report (default: the alert's events and actions).
    """
    note = _describe(desired) if note is None else note
    existing = client.read_automations_by_name(desired.name)
    if not existing:
        if not dry_run:
            client.create_automation(desired)
        return SetupItem(kind="automation", name=desired.name, outcome=Outcome.CREATED, note=note)

    # Newest first; older copies (two setups racing, or made by hand) would alert twice.
    keep, *duplicates = existing
    current = AutomationCore.model_validate(keep.model_dump(exclude={"id"}))
    changes = [f for f in _COMPARED if getattr(current, f) != getattr(desired, f)]
    if duplicates:
        changes.append(f"{len(duplicates)} duplicate(s) removed")
    if not changes:
        return SetupItem(kind="automation", name=desired.name, outcome=Outcome.UNCHANGED, note=note)
    if not dry_run:
        client.update_automation(keep.id, desired)
        for duplicate in duplicates:
            client.delete_automation(duplicate.id)
    return SetupItem(
        kind="automation",
        name=desired.name,
        outcome=Outcome.UPDATED,
        changes=changes,
        note=note,
    )


def _describe(automation: AutomationCore) -> str:
    kinds = ", ".join(action.type for action in automation.actions)
    return f"on {' / '.join(sorted(ALERT_EVENTS))}: {kinds}"
