"""generation/close (flows/closing.py): the generation of a run that crashed past its
reruns, or was cancelled with no process left, is closed at once and its own files
deleted; a run that will be rerun keeps its generation (issue 7, item 3).

Runs on the test harness's Prefect server: the flow runs it reads are real ones, driven
through their states by the API as the automations would.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.states import Cancelled, Crashed, Pending, Running

from flows.closing import close_generation
from storyloom import services
from storyloom.models import GenerationConfig, LifeStory
from storyloom.prompts import PROMPT_VERSION
from tasks.media import store_media

pytestmark = pytest.mark.flows


@flow(name="story")
def _stand_in(story_id: str) -> None:
    """Only its runs are used: the states are set by the test, as by a dead worker."""


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as prefect:
        yield prefect


def _run_that_ended(client: SyncPrefectClient, story_id: str, starts: int, end: str) -> UUID:
    run = client.create_flow_run(_stand_in, parameters={"story_id": story_id})
    for _ in range(starts):
        client.set_flow_run_state(run.id, Pending(), force=True)
        client.set_flow_run_state(run.id, Running(), force=True)
    final = Crashed(message="No heartbeat for 90 s") if end == "crashed" else Cancelled()
    client.set_flow_run_state(run.id, final, force=True)
    assert client.read_flow_run(run.id).run_count == starts
    return run.id


def _generation_of(story_id: str, run_id: UUID) -> str:
    store = services.store()
    generation = store.start_generation(
        story_id, GenerationConfig(pages=4), prompt_version=PROMPT_VERSION,
        flow_run_id=str(run_id),
    )  # fmt: skip
    store_media.fn(generation, f"stories/{story_id}/images/page-01-abc", b"png", "image",
                   "png", "test")  # fmt: skip
    return generation


@pytest.mark.parametrize(("end", "status"), [("crashed", "failed"), ("cancelled", "cancelled")])
def test_a_run_that_ended_past_its_reruns_has_its_generation_closed(
    life_story: LifeStory, client: SyncPrefectClient, end: str, status: str
) -> None:
    store = services.store()
    run_id = _run_that_ended(client, life_story.id, starts=2, end=end)
    generation = _generation_of(life_story.id, run_id)
    assert store.media_of(generation)
    path = services.media().path_for(f"stories/{life_story.id}/images/page-01-abc", "png")
    assert path.exists()

    closed = close_generation(f"prefect.flow-run.{run_id}", reruns=1)

    assert closed == [generation]
    (info,) = store.generations(life_story.id)
    assert info.status == status
    assert info.error is not None
    assert ("crashed after 2 start(s)" in info.error) == (end == "crashed")
    assert store.media_of(generation) == []
    assert not path.exists()
    # Closing again (a second event) changes nothing.
    assert close_generation(str(run_id), reruns=1) == []


def test_a_crashed_run_that_will_be_rerun_keeps_its_generation(
    life_story: LifeStory, client: SyncPrefectClient
) -> None:
    store = services.store()
    run_id = _run_that_ended(client, life_story.id, starts=1, end="crashed")
    generation = _generation_of(life_story.id, run_id)

    assert close_generation(f"prefect.flow-run.{run_id}", reruns=3) == []

    (info,) = store.generations(life_story.id)
    assert (info.id, info.status) == (generation, "running")
    assert store.media_of(generation)


def test_a_run_still_at_work_is_left_alone(
    life_story: LifeStory, client: SyncPrefectClient
) -> None:
    store = services.store()
    run = client.create_flow_run(_stand_in, parameters={"story_id": life_story.id})
    client.set_flow_run_state(run.id, Running(), force=True)
    _generation_of(life_story.id, run.id)

    assert close_generation(str(run.id), reruns=0) == []
    assert [g.status for g in store.generations(life_story.id)] == ["running"]
