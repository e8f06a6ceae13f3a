"""The two layers of limits: runs per work pool, and calls per external API (two global
concurrency limits each: calls in flight, and their rate; see storyloom/limits.py).

prefect.yaml cannot set either (see shared/reference/prefect.md), so they are made here.
Each function reads what the server has, writes only what differs, and says which.
"""

from __future__ import annotations

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
from deployments.report import Outcome, SetupItem


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
        if not dry_run:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=pool_type,
                    base_job_template=worker.get_default_base_job_template(),
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
    if pool.concurrency_limit == limit:
        return SetupItem(kind="work pool", name=name, outcome=Outcome.UNCHANGED, note=note)
    if not dry_run:
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))
    return SetupItem(
        kind="work pool",
        name=name,
        outcome=Outcome.UPDATED,
        changes=[f"concurrency_limit: {pool.concurrency_limit} → {limit}"],
        note=note,
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
