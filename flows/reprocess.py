"""Flow `reprocess` (deployment `reprocess/nightly`): redo the stories that need it, in batches.

The store says which stories need work again and why (a failed last run, missing
illustrations or narration, older prompts, a config saved by an older schema). Each is
submitted to `story/generate` with an idempotency key naming the story's state, a batch
at a time: the next batch goes only when the runs of the last one have ended, so this
flow never has more than `batch_size` story runs of its own in flight. Submitting the
same state again (a second run, a retry) gets Prefect's existing run back instead of a
new one, and is reported as already submitted. A table artifact says what was done.

It waits on the runs it submits, so its deployment lives on the `maintenance` pool:
on `story` it would hold one of the slots those runs need.

First it prunes Prefect's result storage (tasks/cache.py): expired payloads, and kept
pictures and chapters whose file no generation uses any more.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from pydantic import BaseModel, Field

from storyloom import services
from storyloom.prompts import PROMPT_VERSION
from storyloom.store.records import Reason, WorkItem
from tasks.cache import human, prune_cache

STORY_DEPLOYMENT = "story/generate"
TAG = "reprocess"
ARTIFACT_KEY = "reprocess-nightly"
PROGRESS_KEY = "reprocess-nightly-progress"

Outcome = Literal[
    "dry run",  # found, and nothing submitted (asked so)
    "submitted",  # submitted; still in flight when the wait ran out
    "already submitted",  # Prefect returned a run an earlier reprocess made for this state
    "completed",  # submitted and completed
    "failed",  # submitted and ended otherwise (failed, crashed, cancelled)
    "not submitted",  # its batch never came: the wait ran out first
]


class ReprocessRow(BaseModel):
    """One story: why it needed work, the story run it got, and how that went."""

    story_id: str
    reason: Reason
    detail: str
    outcome: Outcome
    flow_run_name: str | None = None
    flow_run_id: str | None = None
    state: str | None = None  # the run's state when this flow last looked


class ReprocessResult(BaseModel):
    dry_run: bool
    batches: int  # batches submitted
    timed_out: bool  # the wait ran out with runs still in flight
    rows: list[ReprocessRow]
    # The result storage's files pruned first (in a dry run: that would be), and bytes.
    cache_files_removed: int = 0
    cache_bytes_freed: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for row in self.rows if row.outcome == outcome)


@flow(
    name="reprocess",
    description="Find stories that need work again and resubmit them in bounded batches.",
)
def reprocess(
    batch_size: Annotated[int, Field(ge=1, le=100)] = 5,
    max_stories: Annotated[int, Field(ge=0)] = 50,
    dry_run: bool = False,
    wait_timeout_seconds: Annotated[float, Field(ge=0)] = 6 * 3600,
    poll_seconds: Annotated[float, Field(gt=0)] = 10.0,
) -> ReprocessResult:
    """Submit up to max_stories stories, batch_size at a time, waiting for each batch.

    wait_timeout_seconds bounds the waiting over the whole run: when it runs out, the
    runs in flight are left to finish on their own, the batches not yet submitted are
    left for the next run, and the flow still completes with its report.
    """
    logger = get_run_logger()
    pruned = prune_cache(dry_run=dry_run)
    items = services.store().stories_needing_work(prompt_version=PROMPT_VERSION, limit=max_stories)
    rows = {
        item.story_id: ReprocessRow(
            story_id=item.story_id,
            reason=item.reason,
            detail=item.detail,
            outcome="dry run" if dry_run else "not submitted",
        )
        for item in items
    }
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    logger.info(
        "%d stories need work (%s); %d batches of up to %d%s",
        len(items), _tally(r.reason for r in rows.values()), len(batches), batch_size,
        " (dry run)" if dry_run else "",
    )  # fmt: skip
    progress = cast(
        UUID,
        create_progress_artifact(
            progress=100.0 if dry_run or not batches else 0.0,
            key=PROGRESS_KEY,
            description=f"{len(batches)} batches of up to {batch_size} stories",
        ),
    )
    result = ReprocessResult(dry_run=dry_run, batches=0, timed_out=False, rows=[])
    if pruned is not None:
        result.cache_files_removed, result.cache_bytes_freed = len(pruned.removed), pruned.freed
    try:
        if not dry_run:
            deadline = time.monotonic() + wait_timeout_seconds
            seen: set[UUID] = set()
            for number, batch in enumerate(batches, start=1):
                if result.timed_out:
                    break
                known = _known_keys([_key(item) for item in batch])
                runs = [_submit(item, rows[item.story_id], known, seen) for item in batch]
                result.batches += 1
                logger.info("batch %d of %d submitted", number, len(batches))
                ended = _wait([run.id for run in runs], deadline, poll_seconds)
                for item, run in zip(batch, runs, strict=True):
                    _record(rows[item.story_id], ended.get(run.id, run))
                if any(not _is_final(run) for run in ended.values()):
                    result.timed_out = True
                    logger.warning(
                        "the wait ran out after batch %d of %d: its runs go on alone, "
                        "the rest waits for the next run",
                        number, len(batches),
                    )  # fmt: skip
                update_progress_artifact(progress, progress=100.0 * number / len(batches))
    finally:
        result.rows = list(rows.values())
        _publish(result)
    logger.info("done: %s", _tally(row.outcome for row in result.rows) or "nothing to do")
    return result


def _key(item: WorkItem) -> str:
    # The item's key changes whenever the story gets a new generation: a new state.
    return f"reprocess-{item.story_id}-{item.key}"


def _known_keys(keys: Sequence[str]) -> set[str]:
    """The keys some flow run already carries: submitting one of them makes nothing new."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(any_=list(keys))
            )
        )
    return {run.idempotency_key for run in runs if run.idempotency_key}


def _submit(item: WorkItem, row: ReprocessRow, known: set[str], seen: set[UUID]) -> FlowRun:
    """A story/generate run for the item: a new one, or the one its key already made."""
    run = cast(
        FlowRun,
        run_deployment(
            name=STORY_DEPLOYMENT,
            parameters={"story_id": item.story_id, **item.config.model_dump(mode="json")},
            flow_run_name=f"reprocess-{item.story_id}",
            timeout=0,
            idempotency_key=_key(item),
            as_subflow=False,
            tags=[TAG],
        ),
    )
    # The server answers a known key with the run it made then, and does not say so
    # (only its status code differs, which the client drops): a key found just before,
    # or a run already handed to this flow, is not a new submission. (Comparing creation
    # times would not do: the scheduler creates this flow's run long before it starts,
    # possibly before the previous night's run submitted anything.)
    repeated = _key(item) in known or run.id in seen
    row.outcome = "already submitted" if repeated else "submitted"
    seen.add(run.id)
    _record(row, run)
    return run


def _wait(ids: Sequence[UUID], deadline: float, poll_seconds: float) -> dict[UUID, FlowRun]:
    """The runs as they stand once none is in flight, or when the deadline comes."""
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))
            )
            left = deadline - time.monotonic()
            if all(_is_final(run) for run in runs) or left <= 0:
                return {run.id: run for run in runs}
            time.sleep(min(poll_seconds, left))


def _record(row: ReprocessRow, run: FlowRun) -> None:
    row.flow_run_name, row.flow_run_id = run.name, str(run.id)
    row.state = run.state.name if run.state is not None else None
    if row.outcome == "submitted" and _is_final(run):
        completed = run.state is not None and run.state.type == StateType.COMPLETED
        row.outcome = "completed" if completed else "failed"


def _is_final(run: FlowRun) -> bool:
    # Not final: Scheduled (late too), Pending, Running and Cancelling hold or will take
    # a slot of the story pool; Paused (a parent waiting for its children) holds none but
    # is not done either.
    return run.state is not None and run.state.is_final()


def _publish(result: ReprocessResult) -> None:
    columns = ["story_id", "reason", "detail", "flow_run_name", "flow_run_id", "state", "outcome"]
    table: list[dict[str, Any]] = [
        {name: getattr(row, name) for name in columns} for row in result.rows
    ]
    summary = _tally(row.outcome for row in result.rows) or "no story needed work"
    create_table_artifact(
        table=table,
        key=ARTIFACT_KEY,
        description=(
            f"reprocess{' (dry run)' if result.dry_run else ''}: {summary}"
            f"{'; the wait ran out' if result.timed_out else ''}; result storage: "
            f"{result.cache_files_removed} files ({human(result.cache_bytes_freed)}) pruned"
        ),
    )


def _tally(values: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{n} {value}" for value, n in counts.items())
