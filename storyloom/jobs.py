"""The job facade over Prefect: the only module of storyloom that imports Prefect.

Callers (the CLI, the HTTP API) get plain values back and never touch Prefect's client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from storyloom.models import GenerationConfig, ImageStyle, Language
from storyloom.settings import get_settings

if TYPE_CHECKING:
    from deployments.report import SetupReport
    from flows.progress import ProgressEvent
    from flows.story import StoryResult


def generate_here(
    story_id: str,
    config: GenerationConfig,
    on_progress: Callable[[ProgressEvent], None] | None = None,
) -> StoryResult:
    """Run the `story` flow in this process (children as subflows) and wait for it."""
    from flows.progress import add_listener
    from flows.story import story

    stop = add_listener(on_progress) if on_progress else None
    try:
        result: StoryResult = story(story_id=story_id, **config.model_dump())
        return result
    finally:
        if stop:
            stop()


def setup(*, dry_run: bool = False) -> SetupReport:
    """Create or update the pools, limits, alert and deployments on the Prefect server."""
    from deployments.setup import run_setup

    return run_setup(dry_run=dry_run)


def pools() -> list[str]:
    """The work pools `storyloom setup` manages (one worker each for `storyloom serve`)."""
    from deployments.config import pool_limits

    return list(pool_limits(get_settings()))


def worker_stop_bounds() -> tuple[float, float]:
    """A worker's grace for running work on SIGTERM, and then its bound for handing
    the rest back (seconds; pydantic ValidationError on bad settings)."""
    settings = get_settings()
    return settings.worker_grace_seconds, settings.worker_kill_seconds


def work(pool: str, *, limit: int | None = None, name: str | None = None) -> int:
    """Run a worker for one pool until it is told to stop; returns its exit code."""
    from deployments.worker import run_worker

    return run_worker(pool, limit=limit, name=name)


# --- jobs: flow runs of the three job deployments, for the HTTP API and `storyloom jobs` --

JobKind = Literal["story", "illustrations", "narration"]
JOB_KINDS: tuple[JobKind, ...] = ("story", "illustrations", "narration")
DEPLOYMENTS: dict[JobKind, str] = {
    "story": "story/generate",
    "illustrations": "illustrations/generate",
    "narration": "narration/generate",
}
POOLS: dict[JobKind, str] = {"story": "story", "illustrations": "images", "narration": "audio"}
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "crashed"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class IllustrationsOptions(BaseModel):
    """What an `illustrations` job may change: the style and how many pictures."""

    model_config = ConfigDict(extra="forbid")
    image_style: ImageStyle | None = None
    image_count: int | None = Field(None, ge=1, le=200)


class NarrationOptions(BaseModel):
    """The languages a `narration` job narrates (added to the book's, or again)."""

    model_config = ConfigDict(extra="forbid")
    languages: list[Language] = Field(min_length=1)


def job_parameters(kind: JobKind, options: dict[str, Any]) -> dict[str, Any]:
    """The flow's parameters for a job's options, validated before anything runs
    (pydantic ValidationError names the field)."""
    if kind == "story":
        return GenerationConfig.model_validate(options).model_dump(mode="json")
    if kind == "illustrations":
        return IllustrationsOptions.model_validate(options).model_dump(
            mode="json", exclude_none=True
        )
    return NarrationOptions.model_validate(options).model_dump(mode="json")


@dataclass(frozen=True)
class RunState:
    """A flow run as the job API shows it."""

    id: str
    name: str  # the deployment's flow: story, illustrations, narration
    state: str  # Prefect's state type, lower case: scheduled, running, completed ...
    state_name: str  # Prefect's state name: Late, AwaitingRetry, Crashed ...
    created: datetime | None
    started: datetime | None
    finished: datetime | None
    error: str | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JobStatus:
    run: RunState
    progress: float | None  # 0..1, from the run's progress artifact
    step: str | None  # what it is doing now
    children: list[RunState]


def submit(
    kind: JobKind,
    story_id: str,
    parameters: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """Start a job (a flow run of its deployment); returns the run's id. The same
    idempotency key gives back the same run (Prefect's own guarantee, per deployment)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENTS[kind])
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"story_id": story_id, **parameters},
            idempotency_key=idempotency_key,
            tags=[f"story:{story_id}", *(tags or [])],
        )
    return str(run.id)


def run_states(run_ids: list[str]) -> dict[str, RunState]:
    """The runs' states, read in one call; a run Prefect does not know is left out."""
    if not run_ids:
        return {}
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = [UUID(r) for r in run_ids]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
        )
        flows = {f.id: f.name for f in client.read_flows()}
    return {str(r.id): _run_state(r, flows.get(r.flow_id, "")) for r in runs}


def status(job_id: str) -> JobStatus | None:
    """A job's state, progress, current step and children; None when Prefect has no
    such run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.exceptions import ObjectNotFound

    run_id = UUID(job_id)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return None
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            )
        )
        flows = {f.id: f.name for f in client.read_flows()}
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    progress = step = None
    if artifacts:
        latest = max(artifacts, key=lambda a: a.updated or a.created or _EPOCH)
        if isinstance(latest.data, int | float):
            progress = round(float(latest.data) / 100, 4)
        description = latest.description or ""
        step = description.rsplit(": ", 1)[1] if ": " in description else description or None
    state = _run_state(run, flows.get(run.flow_id, ""))
    if state.state == "completed":
        progress = 1.0
    return JobStatus(
        run=state,
        progress=progress,
        step=step,
        children=sorted(
            (_run_state(c, flows.get(c.flow_id, "")) for c in children),
            key=lambda c: (c.created or _EPOCH, c.id),
        ),
    )


def cancel(job_id: str) -> RunState | None:
    """Cancel a job and, through Prefect, its children: a run not yet started is
    cancelled at once, a running one is told to stop (Cancelling) and its worker stops
    it; its paid tasks check before every call. Returns the state before the cancel;
    a finished job is left as it is (the caller answers 409)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled, Cancelling

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(job_id))
        except ObjectNotFound:
            return None
        before = _run_state(run, "")
        if before.final or before.state == "cancelling":
            return before
        not_started = before.state in ("scheduled", "paused")
        client.set_flow_run_state(
            run.id,
            Cancelled(message="cancelled through the job API")
            if not_started
            else Cancelling(message="cancelled through the job API"),
            force=True,
        )
    return before


def stats() -> dict[str, Any]:
    """Per kind: jobs by state, the pool's limit and what runs now; per API limit: the
    slots in use."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    kinds: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for kind in JOB_KINDS:
            flow_name, deployment_name = DEPLOYMENTS[kind].split("/")
            counts: dict[str, int] = {}
            for state in StateType:
                counts[state.value.lower()] = client.count_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state]))
                    ),
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=[deployment_name])
                    ),
                )
            try:
                pool = client.read_work_pool(POOLS[kind])
                limit = pool.concurrency_limit
            except Exception:  # no such pool on this server (setup not run)
                limit = None
            kinds[kind] = {
                "flow": flow_name,
                "states": {k: v for k, v in counts.items() if v},
                "pool": POOLS[kind],
                "pool_limit": limit,
                "running": counts.get("running", 0) + counts.get("pending", 0),
            }
        limits = {
            gcl.name: {"limit": gcl.limit, "in_use": gcl.active_slots}
            for gcl in client.read_global_concurrency_limits(limit=200)
        }
    return {"kinds": kinds, "api_limits": limits}


_SECRET_NAMES = ("GEMINI_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY", "SARVAM_API_KEY",
                 "CLOUDINARY_API_SECRET")  # fmt: skip


def _scrub(message: str) -> str:
    """A run's error as an application may see it: one paragraph, no stack trace, no
    secret of this environment."""
    import os
    import re

    text = message.strip().split("\nTraceback", 1)[0].strip()
    for name in _SECRET_NAMES:
        value = os.environ.get(name, "")
        if len(value) >= 8:
            text = text.replace(value, "***")
    url = os.environ.get("CLOUDINARY_URL", "")
    if "@" in url and ":" in url.split("@", 1)[0]:
        secret = url.split("@", 1)[0].rsplit(":", 1)[1]
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return text[:1000]


def _run_state(run: Any, flow_name: str) -> RunState:
    state = run.state
    state_type = state.type.value.lower() if state is not None else "scheduled"
    error = None
    if state_type in ("failed", "crashed") and state is not None:
        error = _scrub(state.message or state.name)
    return RunState(
        id=str(run.id),
        name=flow_name,
        state=state_type,
        state_name=state.name if state is not None else "Scheduled",
        created=run.created,
        started=run.start_time,
        finished=run.end_time if state_type in FINAL_STATES else None,
        error=error,
    )


def recent(
    *, kind: JobKind | None = None, story_id: str | None = None, limit: int = 20
) -> list[RunState]:
    """Recent runs of the job deployments (all, or one kind; one story's by its tag)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    kinds = [kind] if kind else list(JOB_KINDS)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(
                name=FlowFilterName(any_=[DEPLOYMENTS[k].split("/")[0] for k in kinds])
            ),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["generate"])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"story:{story_id}"]) if story_id else None
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
        flows = {f.id: f.name for f in client.read_flows()}
    return [_run_state(r, flows.get(r.flow_id, "")) for r in runs]
