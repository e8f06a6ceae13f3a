"""Flow `reprocess` against the test server: what it submits to story/generate, and how.

No worker runs here, so a submitted run stays Scheduled. A stand-in worker thread takes
the place of one where a batch must end: it ends each run it finds (Completed, or
Failed where a test says so) and counts how many were in flight at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State
from prefect.states import Cancelled, Completed, Failed
from sqlalchemy import update

from deployments.report import Outcome
from deployments.setup import run_setup
from flows.reprocess import ARTIFACT_KEY, PROGRESS_KEY, ReprocessResult, reprocess
from storyloom import services
from storyloom.models import GenerationConfig, Illustration, LifeStage, LifeStory, Page, Tone
from storyloom.prompts import PROMPT_VERSION
from storyloom.store.records import REASONS
from storyloom.store.tables import GenerationRow

pytestmark = pytest.mark.flows

CONFIG = GenerationConfig(pages=2, image_count=2, narration_languages=[])
OLD_CONFIG = GenerationConfig(pages=2, image_count=1, tone=Tone.JOYFUL, narration_languages=[])


@pytest.fixture(scope="module", autouse=True)
def deployments(tmp_path_factory: pytest.TempPathFactory) -> None:
    """story/generate (and the rest of prefect.yaml) on the session's test server."""
    # Module-scoped, so it runs before the autouse clean_env: clean the same way here.
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("STORYLOOM_"):
                env.delenv(name)
        env.chdir(tmp_path_factory.mktemp("setup"))
        report = run_setup()
    assert report.item("deployment", "story/generate").outcome is not Outcome.FAILED
    assert report.item("deployment", "reprocess/nightly").outcome is not Outcome.FAILED


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


# Stories in every state, written straight into the store (no story flow runs here).


def add_story(name: str) -> str:
    story_id = f"{name}-{uuid4().hex[:6]}"  # the server is shared by the whole session
    services.store().add_story(
        LifeStory(
            id=story_id,
            kind="life",
            title=name,
            language="en-IN",
            stages={LifeStage.CHILDHOOD: ["We lived by the river."]},
        )
    )
    return story_id


def generation(
    story_id: str,
    config: GenerationConfig = CONFIG,
    *,
    prompt_version: str = PROMPT_VERSION,
    images: int | None = None,
    outcome: str = "publish",
) -> str:
    store = services.store()
    generation_id = store.start_generation(story_id, config, prompt_version=prompt_version)
    if outcome == "fail":
        store.fail(generation_id, "RuntimeError: the image model was down")
    elif outcome == "publish":
        store.save_pages(generation_id, [Page(number=1, text="..", words=1)])
        count = config.illustrations if images is None else images
        store.save_illustrations(generation_id, [picture(p) for p in range(1, count + 1)])
        store.publish(generation_id)
    return generation_id


def picture(position: int) -> Illustration:
    return Illustration(
        position=position,
        page_number=position,
        prompt="the river",
        public_id=f"page-{position:02d}",
        url=f"file:///page-{position:02d}.png",
        thumbnail_url=f"file:///page-{position:02d}.png",
        width=8,
        height=8,
    )


def stories_in_every_state() -> dict[str, str]:
    """Reason → story id, for the four reasons and three stories that need nothing."""
    failed, missing, prompts, schema, running, fine, never = (
        add_story(name)
        for name in ("failed", "missing", "prompts", "schema", "running", "fine", "never")
    )
    generation(failed, OLD_CONFIG)
    generation(failed, outcome="fail")
    generation(missing, images=1)
    generation(prompts, prompt_version="2020-01-01.0")
    old = generation(schema)
    stored = CONFIG.model_dump(mode="json")
    del stored["audience"]  # written before the field existed
    with services.store().engine.begin() as connection:
        connection.execute(
            update(GenerationRow).where(GenerationRow.id == old).values(config=stored)
        )
    generation(running, prompt_version="2020-01-01.0")
    generation(running, outcome="running")
    generation(fine)
    return {
        "last run failed": failed,
        "missing outputs": missing,
        "older prompt version": prompts,
        "older config": schema,
        "running": running,
        "fine": fine,
        "never": never,
    }


# Looking at what the flow did.


def story_runs(client: SyncPrefectClient, story_ids: set[str]) -> list[FlowRun]:
    """The story/generate runs of these stories, oldest first."""
    deployment = client.read_deployment_by_name("story/generate")
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
    )
    mine = [r for r in runs if r.parameters.get("story_id") in story_ids]
    return sorted(mine, key=lambda r: r.created or 0)


def in_flight_when_created(run: FlowRun, runs: list[FlowRun]) -> int:
    """How many of the runs (this one included) had been created and not yet ended."""
    assert run.created is not None
    return sum(
        1
        for other in runs
        if other.created is not None
        and other.created <= run.created
        and other.state is not None
        and (not other.state.is_final() or other.state.timestamp > run.created)
    )


def run_reprocess(**parameters: Any) -> tuple[ReprocessResult, UUID]:
    # A short overall wait: a flow that failed to stop waiting fails the test quickly.
    parameters = {"poll_seconds": 0.05, "wait_timeout_seconds": 60.0, **parameters}
    state = reprocess(return_state=True, **parameters)
    result = state.result()
    assert isinstance(result, ReprocessResult)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return result, flow_run_id


def artifact(client: SyncPrefectClient, key: str, flow_run_id: UUID) -> Any:
    (found,) = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        )
    )
    return found.data


def table(client: SyncPrefectClient, flow_run_id: UUID) -> dict[str, dict[str, Any]]:
    data = artifact(client, ARTIFACT_KEY, flow_run_id)
    rows = json.loads(data) if isinstance(data, str) else data
    return {row["story_id"]: row for row in rows}


class StandInWorker:
    """Ends the reprocess runs of some stories once it has seen them twice, and records
    the most of them it ever saw in flight at once."""

    def __init__(self, story_ids: set[str], fail: set[str] | None = None) -> None:
        self.story_ids, self.fail = story_ids, fail or set()
        self.most_in_flight = 0
        self.ended: set[UUID] = set()
        self._seen: dict[UUID, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StandInWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._stop.is_set():
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["reprocess"]))
                )
                waiting = [
                    r
                    for r in runs
                    if r.parameters.get("story_id") in self.story_ids
                    and r.state is not None
                    and not r.state.is_final()
                ]
                self.most_in_flight = max(self.most_in_flight, len(waiting))
                for run in waiting:
                    self._seen[run.id] = self._seen.get(run.id, 0) + 1
                    if self._seen[run.id] >= 2:
                        story_id = run.parameters["story_id"]
                        end: State[Any] = Failed() if story_id in self.fail else Completed()
                        client.set_flow_run_state(run.id, end, force=True)
                        self.ended.add(run.id)
                time.sleep(0.05)


def test_stories_are_submitted_in_bounded_batches_and_reported(
    client: SyncPrefectClient,
) -> None:
    stories = stories_in_every_state()
    reasons = [reason for reason in REASONS if reason in stories]
    needing = {stories[reason] for reason in reasons}
    everyone = set(stories.values())

    with StandInWorker(everyone, fail={stories["older config"]}) as worker:
        result, flow_run_id = run_reprocess(batch_size=2)

    # Only the stories that need work got a run, each exactly one, from story/generate.
    runs = story_runs(client, everyone)
    assert sorted(r.parameters["story_id"] for r in runs) == sorted(needing)
    for run in runs:
        story_id = run.parameters["story_id"]
        # The failed one is retried as it was asked for (CONFIG), not as its book was
        # made (OLD_CONFIG).
        assert run.parameters == {"story_id": story_id, **CONFIG.model_dump(mode="json")}
        assert run.tags == ["reprocess"]
        assert run.idempotency_key is not None
        assert run.idempotency_key.startswith(f"reprocess-{story_id}-")
        assert run.name == f"reprocess-{story_id}"
        assert run.parent_task_run_id is None  # not a subflow of reprocess
    assert worker.ended == {r.id for r in runs}

    # Never more than a batch in flight: as the stand-in worker saw it, and from the
    # timestamps (when each run was created, at most one other was unfinished).
    assert 1 <= worker.most_in_flight <= 2
    assert max(in_flight_when_created(run, runs) for run in runs) == 2
    assert result.batches == 2
    assert not result.timed_out

    rows = table(client, flow_run_id)
    assert set(rows) == needing
    for reason in reasons:
        row = rows[stories[reason]]
        assert row["reason"] == reason
        assert row["outcome"] == ("failed" if reason == "older config" else "completed")
        run = next(r for r in runs if r.parameters["story_id"] == stories[reason])
        assert (row["flow_run_id"], row["flow_run_name"]) == (str(run.id), run.name)
    assert rows[stories["missing outputs"]]["detail"] == "1 of 2 illustrations"
    assert rows[stories["older config"]]["state"] == "Failed"
    assert artifact(client, PROGRESS_KEY, flow_run_id) == 100.0

    # The same state again: Prefect hands back the runs the keys made; nothing is new.
    again, again_id = run_reprocess(batch_size=2)
    assert len(story_runs(client, everyone)) == len(runs)
    assert {row.outcome for row in again.rows} == {"already submitted"}
    assert set(table(client, again_id)) == needing


def test_a_dry_run_reports_and_submits_nothing(client: SyncPrefectClient) -> None:
    stories = stories_in_every_state()
    result, flow_run_id = run_reprocess(dry_run=True, max_stories=2)

    assert story_runs(client, set(stories.values())) == []
    # The two most urgent, by priority.
    assert [(r.story_id, r.reason, r.outcome) for r in result.rows] == [
        (stories["last run failed"], "last run failed", "dry run"),
        (stories["missing outputs"], "missing outputs", "dry run"),
    ]
    assert set(table(client, flow_run_id)) == {
        stories["last run failed"],
        stories["missing outputs"],
    }


def test_when_the_wait_runs_out_the_rest_is_left_for_the_next_run(
    client: SyncPrefectClient,
) -> None:
    # No worker: the first batch stays Scheduled until the wait gives up.
    story_ids = [add_story(f"stuck{n}") for n in range(3)]
    for story_id in story_ids:
        generation(story_id, outcome="fail")

    result, flow_run_id = run_reprocess(batch_size=2, wait_timeout_seconds=0.5)

    runs = story_runs(client, set(story_ids))
    assert [r.parameters["story_id"] for r in runs] == story_ids[:2]  # oldest failure first
    assert all(r.state is not None and r.state.is_scheduled() for r in runs)
    assert result.timed_out
    assert result.batches == 1
    assert [row.outcome for row in result.rows] == ["submitted", "submitted", "not submitted"]
    assert [row.state for row in result.rows] == ["Scheduled", "Scheduled", None]
    assert table(client, flow_run_id)[story_ids[2]]["outcome"] == "not submitted"
    assert artifact(client, PROGRESS_KEY, flow_run_id) == 50.0

    # A second run finds the first batch already submitted, still in flight: it waits
    # for those, not for new ones, and submits nothing more.
    again, _ = run_reprocess(batch_size=2, wait_timeout_seconds=0.5)
    assert [row.outcome for row in again.rows] == [
        "already submitted",
        "already submitted",
        "not submitted",
    ]
    assert len(story_runs(client, set(story_ids))) == 2

    for run in runs:  # leave nothing in flight for the other tests
        client.set_flow_run_state(run.id, Cancelled(), force=True)


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(Exception, match="batch_size"):
        reprocess(batch_size=0)
