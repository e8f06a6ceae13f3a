"""The two layers of limits: runs per work pool, and calls per external API (two global
concurrency limits each: calls in flight, and their rate; see storyloom/limits.py).

prefect.yaml cannot set either (see shared/reference/prefect.md), so they are made here.
Each function reads what the server has, writes only what differs, and says which.
"""

from __future__ import annotations

import copy
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.exceptions import ObjectNotFound
from prefect.workers.base import BaseWorker

from deployments.config import ApiLimit
from deployments.flow_run import SIGTERM_BEHAVIOR_ENV
from deployments.report import Outcome, SetupItem

# What the process pools' job template sets for every flow run: on SIGTERM, Prefect's
# flow-run supervisor hands the run back to the pool instead of letting it crash
# (deployments/worker.py, deployments/flow_run.py).
RUN_ENV = {SIGTERM_BEHAVIOR_ENV: "reschedule"}


def with_run_env(template: dict[str, Any]) -> dict[str, Any] | None:
    """The job template with RUN_ENV among its env defaults; None when it has it already
    (or has no env variable to set it in)."""
    env = template.get("variables", {}).get("properties", {}).get("env")
    if not isinstance(env, dict):
        return None
    defaults = env.get("default") or {}
    if all(defaults.get(name) == value for name, value in RUN_ENV.items()):
        return None
    updated = copy.deepcopy(template)
    updated["variables"]["properties"]["env"]["default"] = {**defaults, **RUN_ENV}
    return updated


def ensure_work_pool(
    client: SyncPrefectClient, name: str, limit: int, pool_type: str, *, dry_run: bool
) -> SetupItem:
    """A work pool that runs at most `limit` flow runs at a time."""
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        pool = None

    if pool is None:
        # The server stores whatever job template it is given; an empty one leaves
        # workers nothing to run. Take the worker type's default, as the CLI does.
        worker = BaseWorker.get_worker_class_from_type(pool_type)
        if worker is None:
            return SetupItem(
                kind="work pool",
                name=name,
                outcome=Outcome.FAILED,
                note=f"no worker of type {pool_type!r} is installed to template the pool",
            )
        default = worker.get_default_base_job_template()
        template = with_run_env(default) or default
        if not dry_run:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=pool_type,
                    base_job_template=template,
                    concurrency_limit=limit,
                    description=f"storyloom: {name} runs, {limit} at a time by default",
                )
            )
        return SetupItem(
            kind="work pool",
            name=name,
            outcome=Outcome.CREATED,
            changes=[f"type={pool_type}", f"concurrency_limit={limit}"],
        )

    note = "" if pool.type == pool_type else f"type is {pool.type!r}, left as it is"
    changes, update = [], WorkPoolUpdate()
    if pool.concurrency_limit != limit:
        changes.append(f"concurrency_limit: {pool.concurrency_limit} → {limit}")
        update.concurrency_limit = limit
    updated = with_run_env(pool.base_job_template) if pool.type == "process" else None
    if updated is not None:
        changes.append("job template: env " + ", ".join(f"{k}={v}" for k, v in RUN_ENV.items()))
        update.base_job_template = updated
    if not changes:
        return SetupItem(kind="work pool", name=name, outcome=Outcome.UNCHANGED, note=note)
    if not dry_run:
        client.update_work_pool(name, update)
    return SetupItem(
        kind="work pool", name=name, outcome=Outcome.UPDATED, changes=changes, note=note
    )


def ensure_api_limit(
    client: SyncPrefectClient, name: str, size: ApiLimit, *, dry_run: bool
) -> SetupItem:
    """One global concurrency limit of an external API (storyloom/limits.py): without
    slot decay it caps calls in flight, with slot decay it caps their rate."""
    try:
        current = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        current = None

    if current is None:
        if not dry_run:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=name,
                    limit=size.limit,
                    slot_decay_per_second=size.slot_decay_per_second,
                )
            )
        return SetupItem(
            kind="concurrency limit",
            name=name,
            outcome=Outcome.CREATED,
            changes=[
                f"limit={size.limit}",
                f"slot_decay_per_second={size.slot_decay_per_second:g}",
            ],
        )

    changes = []
    if current.limit != size.limit:
        changes.append(f"limit: {current.limit} → {size.limit}")
    if current.slot_decay_per_second != size.slot_decay_per_second:
        changes.append(
            f"slot_decay_per_second: {current.slot_decay_per_second:g}"
            f" → {size.slot_decay_per_second:g}"
        )
    # An operator may switch a limit off on purpose (say, during an incident); setup
    # leaves that choice alone but makes it visible, since calls then run unthrottled.
    note = "" if current.active else "inactive: calls are not throttled until it is activated"
    if not changes:
        return SetupItem(kind="concurrency limit", name=name, outcome=Outcome.UNCHANGED, note=note)
    update = GlobalConcurrencyLimitUpdate(
        limit=size.limit, slot_decay_per_second=size.slot_decay_per_second
    )
    if current.slot_decay_per_second > 0 and size.slot_decay_per_second == 0:
        # Slots taken while it decayed are never given back: without decay they would
        # stay taken for good. Calls in flight release theirs into a floor of zero.
        update = GlobalConcurrencyLimitUpdate(
            limit=size.limit, slot_decay_per_second=0.0, active_slots=0
        )
        changes.append("active_slots: reset to 0")
    if not dry_run:
        client.update_global_concurrency_limit(name, update)
    return SetupItem(
        kind="concurrency limit", name=name, outcome=Outcome.UPDATED, changes=changes, note=note
    )
